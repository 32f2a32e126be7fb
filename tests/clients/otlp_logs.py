"""Sends log records to an OTLP/HTTP endpoint with the OpenTelemetry Python SDK and its
OTLP/HTTP (protobuf) exporter, the way an instrumented application does.

    python otlp_logs.py URL TOKEN RUN N gzip|none [TIMEOUT_SECONDS]

Record i has the body "RUN-i", the attribute "seq" = i, severity WARNING, and (for odd i)
the trace and span ids of an SDK span. Prints one JSON line: the trace id used and the
export results; exits 1 unless every export succeeded.
"""

import json
import logging
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

url, token, run, n, compression = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
# The exporter retries 429 and 503 with backoff until this timeout.
timeout = int(sys.argv[6]) if len(sys.argv) > 6 else 10

results = []


class RecordingExporter(OTLPLogExporter):
    """The SDK's exporter, remembering what each export returned (the batch processor
    only logs failures)."""

    def export(self, batch):
        result = super().export(batch)
        results.append(result.name)
        return result


exporter = RecordingExporter(
    endpoint=url,
    headers={"authorization": f"Bearer {token}"},
    compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
    timeout=timeout,
)
provider = LoggerProvider(resource=Resource.create({"service.name": "shipper-test", "run": run}))
provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=20))
handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
log = logging.getLogger("weir.shipper.test")
log.propagate = False
log.addHandler(handler)
log.setLevel(logging.INFO)

tracer = TracerProvider().get_tracer("weir.shipper.test")
trace_id = None
for i in range(n):
    if i % 2 == 1:
        with tracer.start_as_current_span("work") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            log.warning("%s-%d", run, i, extra={"seq": i})
    else:
        log.warning("%s-%d", run, i, extra={"seq": i})

provider.force_flush()
provider.shutdown()
print(json.dumps({"trace_id": trace_id, "results": results}))
sys.exit(0 if results and all(r == "SUCCESS" for r in results) else 1)
