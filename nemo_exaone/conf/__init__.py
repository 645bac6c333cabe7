"""The Hydra configs of every training stage, shipped inside the package.

Found through Hydra's ``pkg://nemo_exaone.conf`` search path, so an installed (non-editable)
package composes ``--config-name tiny_cpu`` from any directory; a user's own config
directory is added in front of it (``--config-dir``) and may override or extend these.
"""

CONFIG_MODULE = "nemo_exaone.conf"
SEARCH_PATH = f"pkg://{CONFIG_MODULE}"
