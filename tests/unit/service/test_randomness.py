"""Seeds and request ids come from the process's own generator: no system call on the request path, and
different draws in each of granian's forked worker processes."""

from __future__ import annotations

import os
import uuid

import pytest

from service.errors import new_request_id, request_id
from service.schemas import GenerateRequest
from service.synthesis import generate_params, random_seed


@pytest.fixture
def no_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(size: int) -> bytes:
        raise AssertionError("os.urandom was called on the request path")

    monkeypatch.setattr(os, "urandom", refuse)


@pytest.mark.usefixtures("no_urandom")
def test_seeds_and_request_ids_make_no_system_call() -> None:
    seeds = {generate_params(GenerateRequest(text="hi")).seed for _ in range(50)}
    assert len(seeds) == 50
    assert all(0 <= seed < 2**63 for seed in seeds)

    ids = {request_id({"headers": []}) for _ in range(50)}
    assert len(ids) == 50
    for value in ids:
        assert uuid.UUID(hex=value).version == 4  # 32 hex digits, as uuid4().hex made them


def test_a_supplied_request_id_is_kept() -> None:
    assert request_id({"headers": [(b"x-request-id", b"abc-123")]}) == "abc-123"
    assert len(new_request_id()) == 32


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_workers_draw_different_seeds() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a granian worker forked from the same parent would draw
        os.write(write, f"{random_seed()} {new_request_id()}".encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    assert child[0] != str(random_seed())
    assert child[1] != new_request_id()


def test_request_ids_are_version_4_uuids_in_every_bit() -> None:
    for _ in range(200):
        value = uuid.UUID(hex=new_request_id())
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
