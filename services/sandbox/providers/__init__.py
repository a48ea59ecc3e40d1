"""One module per provider wire format; each exposes `routes(state)`."""
