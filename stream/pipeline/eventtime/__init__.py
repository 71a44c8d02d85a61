"""Event time: how far each stage may close windows, from the input partitions to the cells.

One clock per stage, each in its module with its state, its persistence and what it puts on the wire:

- ``sources``: the **source clock** of ingest. Per owned input partition, the maximum event time and when it last
  moved; reported with every entity envelope (``wm``) and by the progress timer. The runtime feeds it one fact
  besides the events: which owned partitions still have messages to read (``mark_busy``; whether a partition
  is caught up is ``stream.runtime.offsets.OffsetLedger.caught_up``'s answer).
- ``join``: the **watermark join** every downstream clock is made of, and its record in a stage's table.
- ``entity``: the **entity clock**. Per entity partition, the join over the input partitions and over its peers
  (which send it lead values), held back by stage changes waiting for their lead (the hold,
  ``stream.pipeline.entities.leads.LeadFunnel.expire_waiting``); reported to the cell partitions after the
  deltas it covers (``CellEnvelope.watermark``) and to the peers (``EntityEnvelope.peer``).
- ``closing``: **where a window is closed**: the rule (its end, plus the allowed lateness, passed by the
  watermark), which cells a cell partition's watermark closes and drops, and which events are late.
- ``cells``: the **cell clock**. Per cell partition, the join over the entity partitions' reports.

Which windows an instant falls in, where each starts and ends in the reporting calendar, is
``stream.core.windows`` over ``stream.core.calendar``.

As in Flink, a watermark is the minimum over input partitions of each one's
own maximum event time, so a partition read ahead of the others on a backlog
does not make their events late. A partition with no new events for
``idle_timeout_ms`` of processing time stops holding the others back: its
progress then advances with the processing clock from its last event time.
A partition that has had no event since its current owner took it (ever, or
since a restart or a rebalance) holds the watermark for ``idle_timeout_ms``
after it was first reported (its events may simply not be fetched yet), then
its owner reports it as None: downstream, the join keeps the progress its
previous owners reported and advances it as an idle partition's, and leaves
out only a partition that never had any (:class:`WatermarkJoin`). A change of
owner thus moves no window: page views appended to a partition idle at a
rebalance are exactly as late as they would have been without it.

Idle means caught up: a partition whose messages are there but not yet read
(a backlog read unevenly, or a broker that stalled) is marked busy
(:meth:`SourceProgress.mark_busy`), and its idle time counts only from when it
was last known to have nothing more to read. Otherwise a stall longer than the
timeout would let the others' progress close windows that its unread events
still belong to.
"""
