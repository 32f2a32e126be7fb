"""Reads events back from Weir's read API with humiolib, LogScale's Python client.

    python humiolib_query.py BASE_URL REPOSITORY TOKEN

Prints one JSON object: what streaming_query and a query job (create_queryjob, poll)
gave back, for tests/humiolib.rs to compare with what it wrote. Any exception fails.
"""
import json
import sys

from humiolib.HumioClient import HumioClient
from humiolib.HumioExceptions import HumioHTTPException

base_url, repository, token = sys.argv[1:4]
client = HumioClient(base_url=base_url, repository=repository, user_token=token)

streamed = list(client.streaming_query("*", start="7d", end="now"))
filtered = list(client.streaming_query("status=500", start="7d"))

job = client.create_queryjob("* | count()", start="7d", is_live=False)
count_poll = job.poll()
job = client.create_queryjob("status=500 | sort(n, order=asc)", start="7d")
events_poll = job.poll()
job = client.create_queryjob("timechart(#host, span=1h)", start="7d")
chart_poll = job.poll()

try:
    list(client.streaming_query("join(x)", start="7d"))
    refused = None
except HumioHTTPException as e:
    refused = {"status": e.status_code, "message": e.message}

print(json.dumps({
    "streamed": streamed,
    "filtered": filtered,
    "count": {"events": count_poll.events, "isAggregate": count_poll.metadata["isAggregate"]},
    "job": {"events": events_poll.events, "metadata": events_poll.metadata},
    "chart": {"events": chart_poll.events, "metadata": chart_poll.metadata},
    "refused": refused,
}))
