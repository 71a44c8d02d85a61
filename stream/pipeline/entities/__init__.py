"""Stage 2: per-entity state, one module per concern; :class:`EntityStage` runs them in order.

stage      the order of a batch's steps, and the partition indexes rebuilt after an assignment
dedup      event ids kept to drop duplicates, forgotten by event time
leads      the lead funnel: lead events, stage changes waiting for their lead, and the hold they put on windows
visitors   visitor touches (page views) and the lead values sent to the partition that owns a lead's visitor
progress   input and peer progress, the watermark reported to the cell stage and to the peers
batch      what one batch accumulates, and the output it becomes
"""

from stream.pipeline.entities.batch import EntityOutput
from stream.pipeline.entities.config import EntityConfig
from stream.pipeline.entities.stage import EntityStage

__all__ = ["EntityConfig", "EntityOutput", "EntityStage"]
