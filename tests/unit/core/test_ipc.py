"""BatchSender: batching, flush timer, and counted drops on a stalled peer."""

from __future__ import annotations

import zmq

from busted import ipc, schema


def _pair(tmp_path, hwm=2):
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, hwm)
    pull.bind(f"ipc://{tmp_path}/s.sock")
    push = ipc.make_socket(ctx, zmq.PUSH, hwm=hwm, linger_ms=0)
    push.connect(f"ipc://{tmp_path}/s.sock")
    return push, pull


def test_full_batches_go_at_once_and_partial_ones_on_the_timer(tmp_path):
    push, pull = _pair(tmp_path, hwm=100)
    clock = [0.0]
    sender = ipc.BatchSender(push, batch_size=4, flush_interval_s=0.001, clock=lambda: clock[0])
    sender.add([{"seq": i} for i in range(6)])
    assert [e["seq"] for e in schema.decode_batch(pull.recv())] == [0, 1, 2, 3]
    assert sender.due_in() == 0.001
    sender.flush_if_due()
    assert not pull.poll(50)  # not due yet
    clock[0] = 0.002
    sender.flush_if_due()
    assert [e["seq"] for e in schema.decode_batch(pull.recv())] == [4, 5]
    assert sender.sent == 6 and sender.dropped == 0
    push.close()
    pull.close()


def test_a_stalled_peer_costs_counted_drops_not_a_stall(tmp_path):
    push, pull = _pair(tmp_path, hwm=2)
    sender = ipc.BatchSender(push, batch_size=1, wait_ms=0)
    for i in range(200):
        sender.add([{"seq": i}])  # nobody reads: must never block
    assert sender.dropped > 0
    assert sender.sent + sender.dropped == 200
    push.close()
    pull.close()


def test_a_held_event_is_sent_at_once(tmp_path):
    push, pull = _pair(tmp_path, hwm=100)
    sender = ipc.BatchSender(push, batch_size=64, flush_interval_s=10)
    sender.add([{"seq": 1}, {"seq": 2, "held": True}])
    assert pull.poll(1000)
    assert [e["seq"] for e in schema.decode_batch(pull.recv())] == [1, 2]
    push.close()
    pull.close()
