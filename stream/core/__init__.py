"""Pure core: validation, funnel state, windows and KPI folds (no Faust, Kafka or Prometheus)."""
