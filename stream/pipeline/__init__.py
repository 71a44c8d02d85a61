"""The three stages of the dataflow, as plain objects the Faust agents drive.

ingest: input topics -> validated events routed by entity (lead, visitor, event)
entities: per-entity state (dedup, leads) -> cell deltas routed by dimension set
cells: window cells -> KPI records, finalised by the watermark
"""
