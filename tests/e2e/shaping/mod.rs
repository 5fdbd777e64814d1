//! End-to-end tests: traffic shaping (issue 29). A destination that pushes back
//! (`421 4.7.28`) is suspended, then recovers step by step; nothing bounces.

mod pushback;
