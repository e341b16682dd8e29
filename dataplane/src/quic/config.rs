//! The `quic-*` keys of `[dataplane]`: validation into [`QuicConfig`] (the file struct and its
//! documented defaults are in [`crate::config`]).

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{ConfigError, DataplaneFile, TlsConfig};

/// The HTTP/3 (QUIC) listener's address, certificate and transport limits (see the `quic-*` keys
/// of [`DataplaneFile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    /// `listen` is the UDP address; the certificate is the TLS listener's.
    pub tls: TlsConfig,
    pub max_concurrent_streams: u32,
    pub idle_timeout: Duration,
    pub stream_receive_window: u64,
    pub receive_window: u64,
    pub max_udp_payload: u16,
}

impl DataplaneFile {
    /// The HTTP/3 listener's config, or `None` when `quic-listen` is empty.
    pub(crate) fn quic_config(&self) -> Result<Option<QuicConfig>, ConfigError> {
        let addr = self.quic_listen.trim();
        if addr.is_empty() {
            return Ok(None);
        }
        let listen = addr
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::QuicListen(self.quic_listen.clone()))?;
        let quic = |key, reason| ConfigError::Quic { key, reason };
        if self.quic_max_concurrent_streams == 0 {
            return Err(quic("quic-max-concurrent-streams", "must be at least 1"));
        }
        if self.quic_idle_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("quic-idle-timeout"));
        }
        // QUIC varints end at 2^62 - 1; below 1 KiB a stream could hardly make progress.
        let window = 1024..(1u64 << 62);
        if !window.contains(&self.quic_stream_receive_window) {
            return Err(quic(
                "quic-stream-receive-window",
                "must be between 1024 and 2^62 - 1 bytes",
            ));
        }
        if !window.contains(&self.quic_receive_window)
            || self.quic_receive_window < self.quic_stream_receive_window
        {
            return Err(quic(
                "quic-receive-window",
                "must be below 2^62 and at least quic-stream-receive-window",
            ));
        }
        if !(1200..=65527).contains(&self.quic_max_udp_payload) {
            return Err(quic(
                "quic-max-udp-payload",
                "must be between 1200 (QUIC's minimum) and 65527",
            ));
        }
        Ok(Some(QuicConfig {
            tls: self.certificate(listen)?,
            max_concurrent_streams: self.quic_max_concurrent_streams,
            idle_timeout: self.quic_idle_timeout,
            stream_receive_window: self.quic_stream_receive_window,
            receive_window: self.quic_receive_window,
            max_udp_payload: self.quic_max_udp_payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let d = DataplaneFile::default;
        let q = d().quic_config().expect("valid").expect("on by default");
        assert_eq!(q.tls.listen, "127.0.0.1:8443".parse().expect("addr"));
        assert_eq!(q.max_concurrent_streams, 256);
        assert_eq!(q.max_udp_payload, 1472);
        let off = DataplaneFile {
            quic_listen: " ".into(),
            ..d()
        };
        assert_eq!(off.quic_config(), Ok(None));
        let bad = |f: DataplaneFile| f.quic_config().expect_err("invalid").to_string();
        assert_eq!(
            bad(DataplaneFile {
                quic_listen: "x".into(),
                ..d()
            }),
            "dataplane.quic-listen: invalid socket address 'x'"
        );
        for (f, key) in [
            (
                DataplaneFile {
                    quic_max_concurrent_streams: 0,
                    ..d()
                },
                "quic-max-concurrent-streams",
            ),
            (
                DataplaneFile {
                    quic_idle_timeout: Duration::ZERO,
                    ..d()
                },
                "quic-idle-timeout",
            ),
            (
                DataplaneFile {
                    quic_stream_receive_window: 10,
                    ..d()
                },
                "quic-stream-receive-window",
            ),
            (
                DataplaneFile {
                    quic_receive_window: 1024 * 1024,
                    ..d()
                },
                "quic-receive-window",
            ),
            (
                DataplaneFile {
                    quic_max_udp_payload: 1000,
                    ..d()
                },
                "quic-max-udp-payload",
            ),
        ] {
            let msg = bad(f);
            assert!(msg.starts_with(&format!("dataplane.{key}")), "{msg}");
        }
        let half_pair = DataplaneFile {
            tls_cert_file: "c.pem".into(),
            ..d()
        };
        assert_eq!(half_pair.quic_config(), Err(ConfigError::TlsPair));
    }
}
