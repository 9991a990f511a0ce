"""The C-STORE / C-ECHO SCP (never imports imaging or TensorFlow: it must start fast)."""

from dicomnode.receive.scp import StorageReceiver, start_receiver

__all__ = ["StorageReceiver", "start_receiver"]
