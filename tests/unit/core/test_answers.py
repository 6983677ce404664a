"""Feedback to capture as datagrams (busted/workers/answers.py)."""

from __future__ import annotations

import os

from busted import ipc
from busted.workers.answers import AnswerReceiver, AnswerSender


def test_an_answer_arrives_from_an_allowed_sender(tmp_path):
    path = tmp_path / "answers.sock"
    receiver = AnswerReceiver(path, (os.geteuid(),))
    sender = AnswerSender(path)
    try:
        assert receiver.receive() == []
        assert sender.send(ipc.pack({"cmd": "release", "hold_id": 7, "pid": 42}))
        assert sender.send(ipc.pack({"cmd": "release", "hold_id": 8, "pid": 42}))
        assert [ipc.unpack(d)["hold_id"] for d in receiver.receive()] == [7, 8]
        assert (path.stat().st_mode & 0o777) == 0o600
    finally:
        sender.close()
        receiver.close()
    assert not path.exists()


def test_a_sender_with_another_uid_is_refused(tmp_path):
    path = tmp_path / "answers.sock"
    receiver = AnswerReceiver(path, (os.geteuid() + 12345,))
    sender = AnswerSender(path)
    try:
        assert sender.send(b"\x80")  # it went, and is dropped on arrival
        assert receiver.receive() == [] and receiver.refused == 1
    finally:
        sender.close()
        receiver.close()


def test_the_sender_says_when_the_datagram_could_not_go(tmp_path):
    """No capture there, or too large for a datagram: the caller falls back to ZeroMQ."""
    path = tmp_path / "answers.sock"
    sender = AnswerSender(path)
    assert not sender.send(b"x")
    receiver = AnswerReceiver(path, (os.geteuid(),))
    try:
        assert not sender.send(b"x" * (16 << 20))
        assert sender.send(b"x") and receiver.receive() == [b"x"]
    finally:
        sender.close()
        receiver.close()


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = tmp_path / "answers.sock"
    AnswerReceiver(path, (os.geteuid(),)).sock.close()  # a killed capture's leftover
    receiver = AnswerReceiver(path, (os.geteuid(),))
    sender = AnswerSender(path)
    try:
        assert sender.send(b"y") and receiver.receive() == [b"y"]
    finally:
        sender.close()
        receiver.close()
