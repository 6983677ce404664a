"""The classify worker's role logic (a :class:`busted.workers.stage.Stage`).

Pull socket: ``pipe/classify.sock`` (bound); pushes to the next stage's socket; sends
verdicts back to capture through the loop's feedback socket.

Events carrying ``payload`` (raw captured bytes) go through the per-connection
:class:`~busted.classifier.reassembly.Reassembler`: once a request or response is
complete (or its connection closed, or it went idle) ONE event leaves with the
classification fields, the masked ``tls_payload`` text and ``bytes``, and without
``payload``. Everything else (connections, DNS, enforcement records, events a source
classified already) passes through untouched, in order. A connection whose first
message is plainly not LLM / MCP gets a ``{"cmd": "verdict", "capture": False}`` sent
back once, so the kernel stops copying its payload.

Held writes (``--enforce``): a capture with ``held`` whose writer is stopped waits for
an answer. If it is a piece of an HTTP/1 request that is not complete yet (headers
before the body, one of several body writes), the request as it stands goes on as a
``provisional`` event to judge; if there is nothing to judge (HTTP/2 control frames,
a head not complete), ``{"cmd": "release"}`` goes back to capture at once; otherwise
the LAST message it completed carries the hold. Classify identifies, judges and
answers a held event itself (:mod:`busted.workers.held_judge`, the short path) unless
that could differ from the full path's answer; then the policy worker answers. A held
write that turns out to be a response (the writer is a server) also gets
``{"cmd": "verdict", "hold": False}``: that connection's writes are not held again.

Behaviour (:mod:`busted.ml.verdicts`): ``TCP_EXCHANGE`` events get the behavioural
model's verdict here, off the capture path; ``BLIND_SPOT`` events carry it.
"""

from __future__ import annotations

from busted import messages
from busted.classifier.reassembly import Reassembler
from busted.config import MonitorConfig
from busted.ml.verdicts import Behaviour
from busted.workers.held_judge import HeldJudge, short_path_wanted
from busted.workers.stage import Event, Stage


class ClassifyStage(Stage):
    role = "classify"
    passthrough = False

    def __init__(self, config: MonitorConfig) -> None:
        super().__init__(config)
        self.enforce = bool(config.enforce)  # holds exist only then
        self.reassembler = Reassembler(
            max_conn_bytes=config.reassembly_max_bytes,
            max_total_bytes=config.reassembly_total_bytes,
            stats=self.stats,
        )
        self.behaviour = Behaviour(self.stats)
        self.judge: HeldJudge | None = None
        if short_path_wanted(config):
            self.judge = HeldJudge(config, self.stats, lambda command: self.feedback(command))

    def wants(self, frame: bytes) -> bool:
        # msgpack writes the key "payload" as b"\xa7payload" ("tls_payload" has another
        # prefix byte): a batch with no raw capture and no close is forwarded as it is.
        return (b"\xa7payload" in frame or b"TCP_CLOSE" in frame
                or b"TCP_EXCHANGE" in frame or b"BLIND_SPOT" in frame)

    def process(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        now = self.now()
        reassembler = self.reassembler
        early = self._held_first(events, now) if self.judge is not None and len(events) > 1 else {}
        for i, event in enumerate(events):
            if _raw(event):
                done = early.pop(i) if i in early else self._feed(event, now)
                for message in done:
                    self.behaviour.message(message)
                out.extend(done)
            elif "payload" in event:
                # Already classified by its source (or an empty capture): only make sure
                # raw bytes go no further than this stage.
                payload = event.pop("payload")
                if not event.get("tls_payload") and isinstance(payload, (bytes, bytearray)):
                    event["tls_payload"] = bytes(payload).decode("utf-8", "replace")
                out.append(event)
            else:
                kind = event.get("event_type")
                if kind == "TCP_CLOSE":
                    closed = reassembler.close(event.get("pid"), event.get("conn_id"), event.get("seq"))
                    for message in closed:
                        self.behaviour.message(message)
                    out.extend(closed)
                elif kind == "TCP_EXCHANGE":
                    out.append(event)
                    out.extend(self.behaviour.exchange(event))
                    continue
                elif kind == "BLIND_SPOT":
                    self.behaviour.blind_spot(event)
                out.append(event)
        self._send_verdicts()
        self._gauges()
        return out

    def tick(self, now: float) -> list[Event]:
        if self.judge is not None:
            self.judge.tick(now)
        out = self.reassembler.expire(now)
        for message in out:
            self.behaviour.message(message)
        self._send_verdicts()
        self._gauges()
        return out

    def close(self) -> list[Event]:
        return self.reassembler.flush_all()

    def _feed(self, event: Event, now: float) -> list[Event]:
        done = self.reassembler.feed(event, now)
        if self.enforce and (event.get("held") or done):
            self._carry_hold(event, done)
        return done

    def _held_first(self, events: list[Event], now: float) -> dict[int, list[Event]]:
        """A held write's process is stopped until it is answered, so the captures of
        its connection in this batch are fed (and the hold answered) before the other
        connections' captures that came earlier: their streams are independent. Returns
        what each capture fed here completed, by index: it leaves in the batch's order."""
        held = [i for i, e in enumerate(events) if e.get("held") and _raw(e)]
        if not held:
            return {}
        connections = {(events[i].get("pid"), events[i].get("conn_id")) for i in held}
        early: dict[int, list[Event]] = {}
        for i in range(held[-1] + 1):
            event = events[i]
            if (event.get("pid"), event.get("conn_id")) in connections:
                if not _raw(event):
                    break  # something else about that connection: keep the batch's order
                early[i] = self._feed(event, now)
        return early

    def _carry_hold(self, capture: Event, done: list[Event]) -> None:
        """Messages copy their first capture's fields: only the capture just fed may
        hold its writer, and only the last message it completed answers for it."""
        for event in done:
            if event.get("held"):
                event["held"] = False
                event["hold_id"] = 0
        if not capture.get("held"):
            return
        if done:
            done[-1]["held"] = True
            done[-1]["hold_id"] = capture.get("hold_id", 0)
            if self.judge is not None and not self.judge.answer(done[-1]):
                done.pop()
            if any(str(e.get("content_class", "")).endswith("_RESPONSE") for e in done):
                # The writer answers on this connection (a server): never hold it again.
                self.stats["no_hold_verdicts"] += 1
                self.feedback(messages.verdict(capture.get("pid", 0), capture.get("conn_id", 0),
                                               hold=False))
            return
        # A piece of a request (its head, or part of its body): judged as it stands, so
        # a denied prompt is stopped before its last piece leaves. The policy stage
        # answers this provisional event and drops it unless it is denied.
        partial = self.reassembler.peek(capture.get("pid"), capture.get("conn_id"))
        if partial is not None and str(partial.get("content_class", "")).endswith("_REQUEST"):
            partial.update(held=True, hold_id=capture.get("hold_id", 0), provisional=True)
            self.stats["held_judged_provisionally"] += 1
            if self.judge is None or self.judge.answer(partial):
                done.append(partial)
            return
        self.stats["held_released_incomplete"] += 1
        self.feedback(messages.release(capture))

    def _send_verdicts(self) -> None:
        verdicts = self.reassembler.verdicts
        while verdicts:
            pid, conn_id = verdicts.pop(0)
            self.feedback(messages.verdict(pid, conn_id, capture=False))

    def _gauges(self) -> None:
        self.stats["open_connections"] = self.reassembler.connections
        self.stats["buffered_bytes"] = self.reassembler.buffered_bytes


def _raw(event: Event) -> bool:
    """Captured bytes for the reassembler (not classified by their source already)."""
    return event.get("payload") is not None and not event.get("content_class")


STAGE = ClassifyStage
