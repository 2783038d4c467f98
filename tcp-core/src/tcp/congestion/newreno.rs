//! NewReno congestion avoidance (RFC 5681 §3.1, eq. 3 in its byte-counting form): about
//! one segment of growth per window of acknowledged data. Fast recovery itself (RFC 6582)
//! is driven by the connection.

/// Byte-counting state for congestion avoidance.
#[derive(Clone, Debug, Default)]
pub(crate) struct NewReno {
    /// Bytes acknowledged since cwnd last grew.
    pub(crate) bytes_acked: u32,
}

impl NewReno {
    pub(crate) fn congestion_avoidance(&mut self, cwnd: &mut u32, acked: u32, mss: u32) {
        self.bytes_acked = self.bytes_acked.saturating_add(acked);
        if self.bytes_acked >= *cwnd {
            self.bytes_acked -= *cwnd;
            *cwnd = cwnd.saturating_add(mss);
        }
    }
}
