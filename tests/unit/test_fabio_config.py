"""Fabio's manual overrides as splits: each line applied or refused on its own."""

from __future__ import annotations

from lbsync.sources.consul.fabio import parse_fabio_config

CONFIG = """
# canary for shop
route weight shop shop.example.com/ weight 0.2 tags "green"
route weight shop shop.example.com/ weight 0.05 tags "amber"
route weight api /api weight 0.5 tags "v2"
route add shop shop.example.com/ http://10.0.0.9:8080/
route weight shop shop.example.com/ weight 1.5 tags "blue"
route weight shop shop.example.com/ weight 0.1
route weight shop shop.example.com/ weight 0.1 tags "a,b"
route weight shop shop.example.com/ weight 0.1 tags "green"
route weight "shop shop.example.com/ weight 0.1
route del shop
hello world
route weight sh*p shop.example.com/ weight 0.1 tags "green"
"""


def test_weight_lines_are_splits_and_every_other_line_is_refused_by_number() -> None:
    routes = parse_fabio_config(CONFIG)
    assert routes.split_value("shop") == {"by": "tag", "groups": {"green": 20.0, "amber": 5.0}}
    assert routes.split_value("api") == {"by": "tag", "groups": {"v2": 50.0}}
    assert routes.split_value("db") is None
    refused = dict(routes.refused)
    assert sorted(refused) == [6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert "route add is not carried out" in refused[6]
    assert "from 0 to 1" in refused[7]
    assert "needs tags" in refused[8]
    assert "one tag per weight" in refused[9]
    assert "already weights group green" in refused[10]
    assert "quotation" in refused[11]
    assert "route del is not carried out" in refused[12]
    assert "not a route command" in refused[13]
    assert "service" in refused[14]
