"""Reads a Weir segment with DuckDB only (no Weir code) and prints what it sees as JSON.

    python duckdb_read_segment.py SEGMENT.parquet

Used by core/segment/tests/duckdb.rs, which compares the output with what it wrote.
"""
import json
import sys

import duckdb

path = sys.argv[1]
con = duckdb.connect()


def rows(sql):
    return con.execute(sql, [path]).fetchall()


out = {
    "duckdb_version": duckdb.__version__,
    "count_per_repo": {repo: n for repo, n in rows(
        'SELECT "#repo", count(*) FROM read_parquet(?) GROUP BY 1 ORDER BY 1')},
    "rawstrings": [r for (r,) in rows(
        'SELECT "@rawstring" FROM read_parquet(?) ORDER BY "@offset", "@id"')],
    # A parsed field through DuckDB's JSON functions.
    "status_by_id": {i: s for i, s in rows(
        """SELECT "@id", fields->>'$.status' FROM read_parquet(?)
           WHERE fields->>'$.status' IS NOT NULL""")},
    "host_tag_by_id": {i: h for i, h in rows(
        """SELECT "@id", tags['host'] FROM read_parquet(?) WHERE map_contains(tags, 'host')""")},
    "errors_by_id": {i: m for i, m in rows(
        'SELECT "@id", "@error_msg" FROM read_parquet(?) WHERE "@error"')},
    "null_parsers": rows('SELECT count(*) FROM read_parquet(?) WHERE "@parser" IS NULL')[0][0],
    "timestamp_ms_by_id": {i: t for i, t in rows(
        'SELECT "@id", epoch_ms("@timestamp") FROM read_parquet(?)')},
    "column_types": {name: kind for name, kind in con.execute(
        "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
        [path]).fetchall()},
    "kv_metadata": {k.decode(): v.decode() for k, v in rows(
        "SELECT key, value FROM parquet_kv_metadata(?) WHERE starts_with(decode(key), 'weir.')")},
    "row_group_repos": [r for (r,) in rows(
        """SELECT stats_min_value FROM parquet_metadata(?)
           WHERE path_in_schema = '#repo' ORDER BY row_group_id""")],
}
print(json.dumps(out, ensure_ascii=False, sort_keys=True))
