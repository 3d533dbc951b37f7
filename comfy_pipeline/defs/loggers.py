"""A Dagster logger for terminals: only what a person watching a run wants to see, one short line each."""

import logging
import sys

import dagster as dg


class _ProgressFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        step = meta.get("step_key") or ""
        message = meta.get("orig_message") or record.getMessage()
        return f"  [{step}] {message}" if step else f"  {message}"


class _UserMessagesOnly(logging.Filter):
    """Drop Dagster's own engine events (STEP_START, HANDLED_OUTPUT, ...): they are in the event log."""

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None) or {}
        return meta.get("dagster_event") is None


@dg.logger(
    config_schema={"log_level": dg.Field(str, default_value="INFO")},
    description="Concise progress on stderr: which prompt, which node, sampling step x/y, where the files went.",
)
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("comfy_pipeline.batch.progress", level=init_context.logger_config["log_level"].upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ProgressFormatter())
    handler.addFilter(_UserMessagesOnly())
    logger.addHandler(handler)
    return logger
