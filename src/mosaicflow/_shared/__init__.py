"""Private helpers every stage uses: array coercion (:mod:`.arrays`), grouping small work into
tasks (:mod:`.batches`), the two-task halo driver (:mod:`.halo`), parameter validators
(:mod:`.validate`) and the worker processes' environment (:mod:`.workers`). Nothing here is
public API."""
