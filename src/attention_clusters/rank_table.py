"""HCCL rank tables: the JSON file that tells each Ascend machine which devices run which ranks.

Used by ``distributed.launcher: rank_table`` (Ascend only): :func:`read_rank_table` checks the
whole table against ``distributed.workers`` and ``distributed.nodes`` and returns this
machine's ``(rank, device)`` pairs, one worker process each.
"""

from .errors import UserError
from .storage import read_json


def read_rank_table(path, workers, nodes=1, node_rank=0):
    """Validate an HCCL rank-table JSON (version 1.0 layout) and return this server's devices.

    Expected: ``{"server_count": "2", "server_list": [{"server_id": ..., "device":
    [{"device_id": "0", "device_ip": ..., "rank_id": "0"}, ...]}, ...], "status": "completed"}``
    with one server per machine (``nodes``), in node order, each listing ``workers`` devices;
    the rank ids of all servers are 0..n-1.

    Returns:
        list of ``(rank_id, device_id)`` int pairs of server ``node_rank``, sorted by rank.

    Raises:
        UserError: naming the file, when it is missing, not JSON, not of that shape, its rank
        ids are not 0..n-1, a server repeats a device id, or its server or device counts differ
        from ``nodes`` or ``workers``.
    """
    where = f"distributed.rank_table '{path}'"
    servers = _rank_table_servers(_read_table(path, where), where, nodes)
    ranks = sorted(rank for pairs in servers for rank, _ in pairs)
    if ranks != list(range(len(ranks))):
        raise UserError(f"{where}: rank_id values must be 0..{len(ranks) - 1}, got {ranks}")
    for index, pairs in enumerate(servers):
        if len({device for _, device in pairs}) != len(pairs):
            raise UserError(f"{where}: device_id values repeat in server_list[{index}]")
        if len(pairs) != workers:
            raise UserError(
                f"{where}: server_list[{index}] lists {len(pairs)} devices but distributed.workers is {workers}"
            )
    return servers[node_rank]


def _read_table(path, where):
    """The parsed JSON of a rank table."""
    if not path:
        raise UserError(
            "params.yaml: distributed.rank_table must name an HCCL rank-table JSON when launcher is rank_table"
        )
    return read_json(path, where, missing="")


def _rank_table_servers(table, where, nodes):
    """Per server of the table, its ``(rank_id, device_id)`` pairs sorted by rank."""
    servers = table.get("server_list") if isinstance(table, dict) else None
    if not isinstance(servers, list) or not servers or not all(isinstance(server, dict) for server in servers):
        raise UserError(f"{where}: expected a non-empty server_list of servers")
    if len(servers) != nodes:
        raise UserError(
            f"{where}: lists {len(servers)} servers but distributed.nodes is {nodes} (one server per machine)"
        )
    count = table.get("server_count", str(len(servers)))
    if str(count) != str(len(servers)):
        raise UserError(f"{where}: server_count is {count} but server_list has {len(servers)} servers")
    result = []
    for index, server in enumerate(servers):
        devices = server.get("device")
        if not isinstance(devices, list) or not devices:
            raise UserError(f"{where}: server_list[{index}].device must be a non-empty list")
        pairs = []
        for k, dev in enumerate(devices):
            try:
                pairs.append((int(dev["rank_id"]), int(dev["device_id"])))
            except (TypeError, KeyError, ValueError):
                raise UserError(
                    f"{where}: server_list[{index}].device[{k}] needs integer-valued 'rank_id' and 'device_id'"
                ) from None
        result.append(sorted(pairs))
    return result
