"""Opening an association to a destination, or one line that says why it could not be opened.

pynetdicom reports a failed association as "not established" and only logs the cause. An
operator needs the cause in the delivery's error and in `dicomnode echo`: a host name that does
not resolve, a port where nothing listens (refused), a host that never answers (timed out), a
peer that rejected us (its reason, and the AE title we called as), a TLS handshake that failed.
So the socket of each outgoing association remembers why its connect failed.
"""

import socket
import time
from collections.abc import Sequence
from typing import Any

from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext

from dicomnode.config import Destination, Settings
from dicomnode.dicom.association import (
    CONNECTION_TUNING_HANDLER,
    bounded_waits_handler,
)
from dicomnode.dicom.bounded_socket import refused_reason
from dicomnode.dicom.requestor import TcpSocket, requestor_ae
from dicomnode.dicom.tls import ClientContext, handshake_failure
from dicomnode.errors import ForwardError


def _connect_error(
    assoc: Association, tls_args: tuple[ClientContext, str] | None
) -> OSError | None:
    if tls_args is not None:
        return tls_args[0].connect_error
    sock = getattr(assoc.dul, "socket", None)
    tcp = getattr(sock, "tcp", None)
    return tcp.connect_error if isinstance(tcp, TcpSocket) else None


def _unreachable(exc: OSError | None, destination: Destination, settings: Settings) -> str:
    address = f"{destination.host}:{destination.port}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {address} (is the peer running, on that port?)"
    if isinstance(exc, TimeoutError):
        return (
            f"no answer from {address} within {settings.network.connect_timeout:g} s "
            "(network.connect_timeout): host down, or a firewall dropping the connection"
        )
    if exc is not None:
        return f"cannot connect to {address}: {exc.strerror or exc}"
    return f"cannot connect to {address} (see the log)"


def open_association(
    destination: Destination,
    settings: Settings,
    contexts: Sequence[PresentationContext],
    where: str,
    tls_args: tuple[ClientContext, str] | None,
    ext_neg: list[Any] | None = None,
    handlers: Sequence[tuple[Any, ...]] = (),
) -> Association:
    """An established association with `destination`, or ForwardError saying why not.

    `ext_neg` are extended negotiation items (e.g. an SCP/SCU role selection) and `handlers`
    pynetdicom event handlers for what the peer sends on the association (an N-EVENT-REPORT).

    `where` names the destination in the message. Everything short of "the peer accepted
    nothing we proposed" may pass (a peer restarted, an AE title the PACS admin will register)
    and is transient.
    """
    ae = requestor_ae(settings)
    ae.requested_contexts = list(contexts)
    connected: list[float] = []

    def note_connected(_event: Event) -> None:
        connected.append(time.monotonic())

    try:
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            evt_handlers=[
                CONNECTION_TUNING_HANDLER,
                bounded_waits_handler(settings.network),
                (evt.EVT_CONN_OPEN, note_connected),
                *handlers,
            ],
            tls_args=tls_args,
            ext_neg=ext_neg,
            max_pdu=settings.node.max_pdu_size,  # what we announce, and take (answer_limits)
        )
    except socket.gaierror as exc:
        raise ForwardError(
            f"cannot resolve host {destination.host!r} of {where}: {exc.strerror} "
            "(check the destination's host, or DNS)",
            transient=True,
        ) from exc
    if assoc.is_established:
        return assoc
    raise _why_not(assoc, destination, settings, where, tls_args, connected)


def _why_not(
    assoc: Association,
    destination: Destination,
    settings: Settings,
    where: str,
    tls_args: tuple[ClientContext, str] | None,
    connected: list[float],
) -> ForwardError:
    """Why an association was not established: transient but for a peer that accepted none
    of our presentation contexts."""
    refused = refused_reason(assoc)
    if refused is not None:  # its A-ASSOCIATE-AC, or what came in its place
        return ForwardError(
            f"{where}'s answer to our association request broke a limit, association "
            f"aborted ({refused})",
            transient=True,
        )
    tls_reason = handshake_failure(tls_args)
    if tls_reason is not None:  # a certificate to renew or a CA to configure: retried
        return ForwardError(f"TLS handshake with {where} failed: {tls_reason}", transient=True)
    answer = assoc.acceptor.primitive or _unread_rejection(assoc)
    result = getattr(answer, "result", None)
    if answer is not None and result in _REJECTED:
        # PS3.8 7.1.1.9: result, source and reason of the A-ASSOCIATE-RJ, and who we said we
        # were, which is what the PACS admin has to register.
        return ForwardError(
            f"association rejected by {where}: {answer.result_str}, {answer.source_str}: "
            f"{answer.reason_str} (we called as {settings.node.ae_title!r}, "
            f"asking for {destination.ae_title!r})",
            transient=True,
        )
    if result == 0x00:  # accepted, then aborted by pynetdicom: no usable context
        return ForwardError(
            f"{where} accepted none of the proposed presentation contexts: {_refused(assoc)}",
            transient=False,
            class_refused=True,
        )
    if not connected:
        why = _unreachable(_connect_error(assoc, tls_args), destination, settings)
        return ForwardError(f"cannot associate with {where}: {why}", transient=True)
    acse = settings.network.acse_timeout
    if time.monotonic() - connected[0] >= acse * 0.9:
        return ForwardError(
            f"{where} took the connection but did not answer the association request within "
            f"{acse:g} s (network.acse_timeout)",
            transient=True,
        )
    return ForwardError(
        f"{where} closed the connection without answering the association request "
        "(a TLS port called without TLS, a peer at its connection limit, or no DICOM port: "
        "an HTTP one?)",
        transient=True,
    )


_REJECTED = (0x01, 0x02)  # A-ASSOCIATE-RJ: permanent, transient (PS3.8 9.3.4)


def _unread_rejection(assoc: Association) -> A_ASSOCIATE | None:
    """The peer's A-ASSOCIATE-RJ left unread in the DUL's queue.

    pynetdicom (3.0) checks that the socket is still connected before it reads the answer; a
    peer that rejects at once and closes (Orthanc, for a called AE title it does not know)
    can have the DUL thread read the rejection and close the socket first, and the
    association ends "aborted" with the rejection unread (~1 in 100 on loopback). An accept
    left there came after our ACSE timeout: that timeout is the story, not the accept.
    """
    answers = assoc.dul.to_user_queue
    with answers.mutex:  # the DUL thread of a peer's A-ABORT may still be putting
        unread = list(answers.queue)
    for primitive in unread:
        if isinstance(primitive, A_ASSOCIATE) and primitive.result in _REJECTED:
            return primitive
    return None


_NOT_SUPPORTED = "abstract syntax not supported"  # a presentation context's result 0x03


def _refused(assoc: Association) -> str:
    """Each SOP class we proposed and the peer's reason (PS3.8 9.3.3.2), with the transfer
    syntaxes offered where those were refused: "transfer syntax(es) not supported" is a PACS
    that would take the class in another syntax, "abstract syntax not supported" one that
    takes no such objects."""
    reasons = {cx.context_id: cx.status.lower() for cx in assoc.rejected_contexts}
    offered: dict[str, list[str]] = {}
    why: dict[str, set[str]] = {}
    for cx in assoc.requestor.requested_contexts:
        abstract = str(cx.abstract_syntax)
        names = offered.setdefault(abstract, [])
        names.extend(n for ts in cx.transfer_syntax if (n := UID(ts).name) not in names)
        why.setdefault(abstract, set()).add(reasons.get(cx.context_id, "no reason given"))
    parts = []
    for abstract, names in sorted(offered.items()):
        reason = ", ".join(sorted(why[abstract]))
        syntaxes = "" if why[abstract] == {_NOT_SUPPORTED} else f" in {', '.join(names)}"
        parts.append(f"{UID(abstract).name} ({abstract}){syntaxes}: {reason}")
    return "; ".join(parts)


def unresolvable_hosts(destinations: Sequence[Destination]) -> list[tuple[Destination, str]]:
    """Each destination whose host name does not resolve now, with the resolver's reason
    (warned at start; its deliveries fail, and are retried, until it does)."""
    problems = []
    for destination in destinations:
        try:
            socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            problems.append((destination, exc.strerror or str(exc)))
    return problems
