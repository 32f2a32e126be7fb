"""Sends documents with the official Elasticsearch Python client's bulk helper, the way
Python shippers do: the client first checks the server (GET /, X-Elastic-Product), then
`helpers.bulk` posts NDJSON to /_bulk and raises on any item error.

    python es_bulk.py URL TOKEN RUN N basic|apikey

Documents i have {"@timestamp", "message": "RUN-i", "seq": i}; even ones are `index`
actions into "web-RUN", odd ones `create` actions into "app-RUN". Prints one JSON line:
the server's version and the helper's success count.
"""

import json
import sys

from elasticsearch import Elasticsearch, helpers

url, token, run, n, auth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]

if auth == "basic":
    client = Elasticsearch(url, basic_auth=("elastic", token), request_timeout=30)
else:
    client = Elasticsearch(url, api_key=token, request_timeout=30)

info = client.info()


def actions():
    for i in range(n):
        source = {"@timestamp": f"2024-05-01T10:00:{i % 60:02d}.000Z", "message": f"{run}-{i}", "seq": i}
        if i % 2 == 0:
            yield {"_index": f"web-{run}", "_id": f"{run}-id-{i}", "_source": source}
        else:
            yield {"_op_type": "create", "_index": f"app-{run}", "_source": source}


success, errors = helpers.bulk(client, actions(), chunk_size=25)
print(json.dumps({"version": info["version"]["number"], "success": success, "errors": errors}))
