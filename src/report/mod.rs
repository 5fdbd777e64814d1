//! TLS-RPT (RFC 8460): counting TLS successes and failures per policy domain and day, building
//! the JSON report and sending it to each `rua`.
