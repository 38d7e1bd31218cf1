import ControlProtocol
import DaemonConfig
import Logging
import MetricsExporter
import ServiceSupport
import SwitchService
import Locking

/// The daemon's `/metrics` server as the config wants it: started, moved to a new address on
/// reload, or stopped. A failure to listen is logged and leaves the daemon running without
/// metrics (losing the switch over a metrics port would be worse).
///
/// ## Concurrency model
/// The current server and its address sit behind a `Locked` (pthread mutex); ``apply(_:)`` is called from the
/// daemon's main task only (start, reload, exit). Scrapes run on the server's own thread.
final class MetricsEndpoint: Sendable {
    private let current = Locked<(address: ListenAddress?, server: MetricsServer?)>((nil, nil))
    private let render: @Sendable () async -> String
    private let logger: Logger

    init(backend: any SwitchBackend, requests: RequestMetrics, restarts: UInt64, logger: Logger) {
        self.logger = logger
        render = {
            async let snapshot = backend.snapshot()
            async let extensions = backend.extensions()
            return PrometheusText.render(MetricsSources(snapshot: await snapshot, extensions: await extensions,
                                                        requests: requests.snapshot(), restarts: restarts))
        }
    }

    func apply(_ address: ListenAddress?) {
        let old = current.withLock { c -> MetricsServer?? in
            guard c.address != address || (address != nil && c.server == nil) else { return .none }
            defer { c = (address, nil) }
            return .some(c.server)
        }
        guard case .some(let previous) = old else { return }
        previous?.stop()
        guard let address else {
            if previous != nil { logger.notice("metrics endpoint stopped") }
            return
        }
        do {
            let server = try MetricsServer(host: address.host, port: address.port, logger: logger, render: render)
            current.withLock { $0.server = server }
            logger.notice("metrics endpoint listening", metadata: ["address": "\(server.address)", "path": "/metrics"])
        } catch {
            logger.error("metrics endpoint not started", metadata: ["address": "\(address)", "error": "\(error.message)"])
        }
    }
}
