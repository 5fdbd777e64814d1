//! End-to-end tests: traffic shaping (issue 29). A destination that pushes back
//! (`421 4.7.28`) is suspended, then recovers step by step; nothing bounces. What the queue
//! holds, and which destinations are held back, in `herald queue summary`. With `[cluster]`,
//! the limits hold for all the nodes together.

mod cluster;
mod pushback;
mod summary;
