"""A storage SCP that misbehaves on purpose, for the forward-fault tests.

It runs in the test process (pynetdicom's threaded server) so a test can change its behaviour
between the node's attempts: answer a failure status, hang mid-transfer, or work normally.
"""

import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from tests.support.ports import free_port


@dataclass
class Behaviour:
    """What the SCP does with each C-STORE: `status` to answer (after `delay_seconds`), or hang
    on the `hang_at`-th instance of an association (1-based) until `release()` or the end."""

    status: int = 0x0000
    hang_at: int | None = None
    delay_seconds: float = 0.0  # a slow PACS: each answer comes this late
    refuse_sop_class: str | None = None  # answered 0x0122 (SOP class not supported), for good
    abort_on: str | None = None  # this SOP Instance UID: the association is aborted, every time
    status_for: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> its answer
    # In place of an answer, raw bytes onto the wire, as a hostile or broken PACS might:
    # "drip", a P-DATA-TF announced and then sent a byte every 0.3 s for three minutes;
    # "flood", 16 KiB fragments of a message that never ends, up to 256 MiB.
    misbehave: str | None = None


@dataclass
class FaultyScp:
    ae_title: str = "FAULTY"
    allowed_calling_aets: list[str] = field(default_factory=list)  # non-empty: reject others
    behaviour: Behaviour = field(default_factory=Behaviour)
    port: int = field(default_factory=free_port)
    transfer_syntaxes: list[str] = field(default_factory=lambda: list(ALL_TRANSFER_SYNTAXES))
    keep_data_sets: bool = False  # each stored data set's bytes in `data_sets` (memory)
    sop_classes: list[str] | None = None  # the storage classes it takes (None: every one)

    def __post_init__(self) -> None:
        self.stored: Counter[str] = Counter()  # SOP Instance UID -> times stored with Success
        self.syntax: dict[str, str] = {}  # SOP Instance UID -> the transfer syntax it came in
        self.data_sets: dict[str, bytes] = {}  # with keep_data_sets: UID -> bytes received
        self.priorities: list[int] = []  # of every C-STORE request, in the order they came
        self.answered: list[int] = []
        self.answered_classes: list[str] = []  # the SOP Class UID of each request answered
        self.message_ids: list[int] = []  # of every C-STORE request, in the order they came
        self._unhang = threading.Event()
        self._per_association: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def destination(self, name: str = "faulty") -> dict[str, object]:
        return {"name": name, "ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port}

    def start(self) -> "FaultyScp":
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            if self.sop_classes is None or context.abstract_syntax in self.sop_classes:
                ae.add_supported_context(context.abstract_syntax, self.transfer_syntaxes)
        ae.add_supported_context(Verification)  # C-ECHO, answered Success whatever it stores
        if self.allowed_calling_aets:
            ae.require_calling_aet = self.allowed_calling_aets
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        return self

    def release(self) -> None:
        """Let a hanging C-STORE return (the SCU has normally given up on it by then)."""
        self._unhang.set()

    def behave(self, behaviour: Behaviour) -> None:
        self._unhang.clear()
        self.behaviour = behaviour

    def stop(self) -> None:
        self._unhang.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _store(self, event: Event) -> int:
        behaviour = self.behaviour
        with self._lock:
            self.message_ids.append(int(event.request.MessageID))
            self.priorities.append(int(event.request.Priority))
            self._per_association[id(event.assoc)] += 1
            position = self._per_association[id(event.assoc)]
        if str(event.request.AffectedSOPInstanceUID) == behaviour.abort_on:
            event.assoc.abort()  # a PACS that will not take this one instance
            return 0xC000  # never sent: the association is gone
        if behaviour.misbehave is not None:
            self._misbehave(event, behaviour.misbehave)
            return 0xA700  # never sent: the SCU has aborted the association
        if behaviour.hang_at is not None and position >= behaviour.hang_at:
            self._unhang.wait(timeout=120)
            return 0xA700  # too late: the SCU has aborted this association
        if behaviour.delay_seconds:
            time.sleep(behaviour.delay_seconds)
        status = behaviour.status_for.get(
            str(event.request.AffectedSOPInstanceUID), behaviour.status
        )
        if event.request.AffectedSOPClassUID == behaviour.refuse_sop_class:
            status = 0x0122
        with self._lock:
            self.answered.append(status)
            self.answered_classes.append(str(event.request.AffectedSOPClassUID))
            if status == 0x0000:
                self.stored[str(event.request.AffectedSOPInstanceUID)] += 1
                syntax = str(event.context.transfer_syntax)
                self.syntax[str(event.request.AffectedSOPInstanceUID)] = syntax
                if self.keep_data_sets:
                    data_set = event.request.DataSet.getvalue()
                    self.data_sets[str(event.request.AffectedSOPInstanceUID)] = data_set
        return status

    def _misbehave(self, event: Event, how: str) -> None:
        """Write `how`'s bytes (see `Behaviour.misbehave`) until the SCU gives up on them (the
        connection fails), the bytes are spent or the SCP stops."""
        connection = event.assoc.dul.socket.socket
        context = event.context.context_id
        try:
            if how == "drip":
                connection.sendall(struct.pack(">BBI", 0x04, 0, 1000))  # P-DATA-TF, 1000 bytes
                for _ in range(600):
                    if self._unhang.wait(0.3):
                        return
                    connection.sendall(b"\0")
            elif how == "flood":
                data = bytes(16 * 1024 - 12)
                # One PDV item (length, context, control 0x00: a data set fragment, not last).
                pdv = struct.pack(">IBB", len(data) + 2, context, 0x00) + data
                pdu = struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv
                for _ in range((256 << 20) // len(pdu)):
                    if self._unhang.is_set():
                        return
                    connection.sendall(pdu)
        except OSError:
            return  # the SCU aborted and closed the connection
