"""The worker's runtime: the batch loop, the offsets ledger, the stages' outputs on Faust, and the Faust adapter."""
