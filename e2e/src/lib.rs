//! End-to-end suite for r8s (multi-node cluster on one machine); scenarios land with the multi-node issue.
