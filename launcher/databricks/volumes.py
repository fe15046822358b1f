"""Unity Catalog volumes by name: one rule for the launcher (an artifacts destination given as a
volume's name) and for `deploy` (`--volume`). Standard library only, so that `deploy` may import it
without the front's modules."""

from __future__ import annotations

import re

# `<catalog>.<schema>.<volume>`: Unity Catalog names hold no period, slash or white space.
VOLUME_NAME = re.compile(r"[^./\s]+\.[^./\s]+\.[^./\s]+")
