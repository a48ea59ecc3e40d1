from __future__ import annotations

import pytest
from manifests import OVERLAYS, Rendered, build


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    return {overlay: Rendered(overlay, build(overlay)) for overlay in OVERLAYS}
