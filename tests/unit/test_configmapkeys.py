"""A ConfigMap's keys (configmapkeys.py): text and binary data alike; the reading
against the API server is in tests/cluster/test_client.py."""

from __future__ import annotations

from kubetune.configmapkeys import config_map_keys


def test_text_and_binary_keys_count():
    config_map = {"data": {"train.jsonl": "{}"}, "binaryData": {"val.jsonl": "e30="}}
    assert config_map_keys(config_map) == {"train.jsonl", "val.jsonl"}


def test_an_empty_configmap_has_no_keys():
    assert config_map_keys({"metadata": {"name": "empty"}}) == frozenset()
