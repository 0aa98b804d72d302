"""A plugin whose import hangs until it is interrupted; it first writes the file ``$ZOO_TEST_READY``."""

import os
import time
from pathlib import Path

Path(os.environ["ZOO_TEST_READY"]).write_text("hanging")
time.sleep(300)
