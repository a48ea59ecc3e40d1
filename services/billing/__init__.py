"""The billing service: usage events from Kafka into the ledger and the control DB."""
