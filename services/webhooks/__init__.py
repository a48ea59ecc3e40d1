"""The webhooks service: delivers terminal task events to customers' callback URLs, signed."""
