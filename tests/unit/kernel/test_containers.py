"""Container ids from cgroup paths."""

from __future__ import annotations

import pytest

from busted.kernel.containers import container_id_from_cgroup_path, container_id_of_pid

CID = "4f1c2a9b" * 8


@pytest.mark.parametrize(
    "path",
    [
        f"/docker/{CID}",
        f"/system.slice/docker-{CID}.scope",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{CID}.scope",
        f"/kubepods/besteffort/pod0b1c/{CID}",
        f"/machine.slice/libpod-{CID}.scope/container",
        f"/system.slice/crio-{CID}.scope",
    ],
)
def test_runtime_paths_name_the_container(path):
    assert container_id_from_cgroup_path(path) == CID


@pytest.mark.parametrize("path", ["/", "/user.slice/user-0.slice/session-3.scope",
                                  "/system.slice/ssh.service", "/docker/abc"])
def test_host_paths_name_none(path):
    assert container_id_from_cgroup_path(path) == ""


def test_read_from_proc_v1_and_v2(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(
        "12:pids:/docker/" + CID + "\n1:name=systemd:/docker/" + CID + "\n0::/\n")
    assert container_id_of_pid(42, proc=str(tmp_path)) == CID
    (tmp_path / "43").mkdir()
    (tmp_path / "43" / "cgroup").write_text("0::/init.scope\n")
    assert container_id_of_pid(43, proc=str(tmp_path)) == ""
    assert container_id_of_pid(44, proc=str(tmp_path)) == ""
