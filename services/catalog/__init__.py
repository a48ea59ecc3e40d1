"""The model catalog: every public model id, its provider, prices (integer nano-USD per
token), limits and capabilities. Shared by the router (routing, metering) and the edge
(worst-case cost of a call, for spend-cap reservations)."""

from catalog.models import (
    Capabilities,
    Catalog,
    ChatModel,
    EmbeddingModel,
    Route,
    load_catalog,
)

__all__ = ["Capabilities", "Catalog", "ChatModel", "EmbeddingModel", "Route", "load_catalog"]
