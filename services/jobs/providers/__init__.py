"""Media provider types: one module per provider protocol, all behind `base.MediaProvider`."""
