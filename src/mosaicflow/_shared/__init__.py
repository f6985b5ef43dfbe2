"""Private helpers every stage uses: array coercion (:mod:`.arrays`), the two-task halo driver
(:mod:`.halo`) and parameter validators (:mod:`.validate`). Nothing here is public API."""
