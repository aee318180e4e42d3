"""Logger factories that never crash a run for want of credentials or network."""

from __future__ import annotations

import logging
import os

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_logger(offline: bool = True, log_model: bool = True, **kwargs) -> WandbLogger:
    """A :class:`WandbLogger`, offline unless asked otherwise (sync later with ``wandb sync``).

    Online runs upload checkpoints as artifacts (``log_model``); offline runs cannot, so the
    flag is dropped there. Online without an API key falls back to offline with a warning.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if not offline and mode not in ("offline", "dryrun", "disabled") and not _has_wandb_credentials():
        log.warning("wandb: no API key (WANDB_API_KEY or ~/.netrc); logging offline instead")
        offline = True
    if offline or mode in ("offline", "dryrun", "disabled"):
        log_model = False
    if "save_dir" in kwargs:
        os.makedirs(kwargs["save_dir"], exist_ok=True)
    return WandbLogger(offline=offline, log_model=log_model, **kwargs)


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read()
