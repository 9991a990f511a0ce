"""The C-STORE SCU that delivers finished jobs to their destinations."""

from dicomnode.forward.echo import echo
from dicomnode.forward.scu import SendReport, send_series

__all__ = ["SendReport", "echo", "send_series"]
