"""--allow as the receiver keeps it: no networks, everyone; each host's answer remembered,
never more than 1024 of them."""

from __future__ import annotations

from deskcast.transport.receive.allow import AllowList


def test_no_networks_allows_everyone_even_without_an_address() -> None:
    allow = AllowList([])
    assert allow.permits(("192.0.2.1", 5000)) and allow.permits(None)


def test_hosts_are_judged_by_address_and_remembered_within_a_bound() -> None:
    allow = AllowList(["10.0.0.0/8"])
    assert allow.permits(("10.9.8.7", 1)) and allow.permits(("::ffff:10.1.1.1", 2, 0, 0))
    assert not allow.permits(("192.0.2.1", 3)) and not allow.permits(None)
    for i in range(3000):                             # a spoofed flood of addresses
        assert not allow.permits((f"192.0.{i // 256}.{i % 256}", 4))
        assert len(allow._known) <= 1024
    assert allow.permits(("10.0.0.1", 5))
