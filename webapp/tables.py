"""Every table, for the code that works on the whole schema: the migrations and
``newsletter db copy``.

``models.py`` holds the tables every feature reads (the catalog, its readers, their
history, the issues); each feature keeps its own beside it (``mailout/models.py``,
``inbound/models.py``…). Importing this module registers them all on ``METADATA``.
"""

from .db import Model

# Imported for what importing does: each module registers its tables on the metadata.
from .inbound import models as inbound_models  # noqa: F401
from .issues import models as issues_models  # noqa: F401
from .mailout import models as mailout_models  # noqa: F401
from .reports import models as reports_models  # noqa: F401
from .subscribers import models as subscribers_models  # noqa: F401
from .webhooks import models as webhooks_models  # noqa: F401

METADATA = Model.metadata
