//! The local admin HTTP endpoint: health, metrics, the queue API and `/dns`.
