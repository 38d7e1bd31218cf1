import ArgumentParser
import ControlProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct TopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top",
        abstract: "Live view of the ports' traffic: frames and bits per second each way, drops per second.",
        discussion: """
        Refreshes every --interval seconds (default 1). Columns: PORT, VM, RX-FPS and RX-BPS \
        (frames and bits per second from the port into the switch), TX-FPS and TX-BPS (delivered to \
        the port), DROPS/S and TOP-DROP (the drop reason with the most frames in the interval, \
        "direction reason [reporter]"). Keys: s next sort column, S previous, r reverse, \
        1-7 sort by that column, q or Ctrl-C quit. The terminal is restored on exit (also on SIGTERM \
        or SIGHUP). Rates stay right across a daemon restart (counters count from its start time). \
        Needs a terminal; for scripts use 'show --interval N'.
        """
    )

    @OptionGroup var globals: GlobalOptions

    @Option(help: "Seconds between refreshes (0.2..60).")
    var interval: Double = 1

    func validate() throws {
        guard (0.2...60).contains(interval) else { throw ValidationError("--interval \(interval) is out of range 0.2..60") }
        guard isatty(STDIN_FILENO) == 1, isatty(STDOUT_FILENO) == 1 else {
            throw ValidationError("top needs a terminal on stdin and stdout; use 'show --interval N' in scripts")
        }
    }

    static let columns = ["PORT", "VM", "RX-FPS", "RX-BPS", "TX-FPS", "TX-BPS", "DROPS/S", "TOP-DROP"]

    func run() throws {
        let screen = try RawScreen()
        defer { screen.restore() }
        var sortColumn = 3
        var reverse = false
        var previous: (SwitchSnapshot, Date)? = nil
        var rates: [PortRates] = []
        var status = ""
        var title = ""
        var nextFetch = Date.distantPast
        while !RawScreen.signalled {
            if Date() >= nextFetch {
                nextFetch = Date().addingTimeInterval(interval)
                do {
                    guard let s = try call(.show, globals).snapshot else { throw CtlFailure.missing("snapshot") }
                    let now = Date()
                    rates = PortRates.between(previous?.0, s, seconds: previous.map { now.timeIntervalSince($0.1) } ?? 0)
                    previous = (s, now)
                    title = "switch \(s.settings.name)  ports=\(s.ports.count)  mac-table=\(s.fdbEntries)  uptime=\(Int(s.uptimeSeconds))s"
                    status = ""
                } catch let e as CtlFailure {
                    status = "daemon unreachable (\(e.message)); retrying"
                }
            }
            screen.draw(frame(title: title, status: status, rates: rates, sortColumn: sortColumn, reverse: reverse))
            let wait = max(0, nextFetch.timeIntervalSinceNow)
            guard let key = screen.readKey(timeout: wait) else { continue }
            switch key {
            case UInt8(ascii: "q"), UInt8(ascii: "Q"), 3, 4: return
            case UInt8(ascii: "s"): sortColumn = (sortColumn + 1) % 7
            case UInt8(ascii: "S"): sortColumn = (sortColumn + 6) % 7
            case UInt8(ascii: "r"): reverse.toggle()
            case UInt8(ascii: "1")...UInt8(ascii: "7"): sortColumn = Int(key - UInt8(ascii: "1"))
            default: break
            }
        }
    }

    /// The screen's lines: title, help, header, one row per port (as many as fit).
    func frame(title: String, status: String, rates: [PortRates], sortColumn: Int, reverse: Bool) -> [String] {
        let sorted = rates.sorted { a, b in
            let less: Bool
            switch sortColumn {
            case 0: less = a.name < b.name
            case 1: less = (a.vm, a.name) < (b.vm, b.name)
            case 2: less = a.framesInPerSecond > b.framesInPerSecond
            case 3: less = a.bitsInPerSecond > b.bitsInPerSecond
            case 4: less = a.framesOutPerSecond > b.framesOutPerSecond
            case 5: less = a.bitsOutPerSecond > b.bitsOutPerSecond
            default: less = a.dropsPerSecond > b.dropsPerSecond
            }
            return reverse ? !less : less
        }
        var rows = [Self.columns.enumerated().map { $0.offset == sortColumn ? "*" + $0.element : $0.element }]
        for r in sorted {
            rows.append([r.name, r.vm, PortRates.human(r.framesInPerSecond), PortRates.human(r.bitsInPerSecond),
                         PortRates.human(r.framesOutPerSecond), PortRates.human(r.bitsOutPerSecond), PortRates.human(r.dropsPerSecond), r.topDrop])
        }
        var widths = [Int](repeating: 0, count: Self.columns.count)
        for row in rows { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
        let table = rows.map { row in
            row.enumerated().map { i, c in
                let pad = String(repeating: " ", count: widths[i] - c.count)
                return (2...6).contains(i) ? pad + c : (i == row.count - 1 ? c : c + pad)
            }.joined(separator: "  ")
        }
        let clock = Date().formatted(date: .omitted, time: .standard)
        return ["tapswitchctl top  \(clock)  \(title)",
                status.isEmpty ? "keys: s/S sort (*), r reverse, 1-7 column, q quit" : status] + table
    }
}

/// The terminal in raw mode on the alternate screen, restored by ``restore()`` (also when SIGTERM,
/// SIGHUP or SIGINT arrive: they only set a flag the loop checks, so restoring happens on the main
/// thread, never inside a signal handler).
final class RawScreen {
    private var saved = termios()
    nonisolated(unsafe) private static var caught: sig_atomic_t = 0
    static var signalled: Bool { caught != 0 }

    init() throws {
        guard tcgetattr(STDIN_FILENO, &saved) == 0 else {
            throw CtlFailure(code: CtlExit.usage, message: "top: cannot read the terminal settings: \(String(cString: strerror(errno)))", errorCode: "usage")
        }
        var raw = saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 0
            cc[Int(VTIME)] = 0
        }
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        for sig in [SIGTERM, SIGHUP, SIGINT] { signal(sig) { _ in RawScreen.caught = 1 } }
        put("\u{1b}[?1049h\u{1b}[?25l")
    }

    func restore() {
        put("\u{1b}[?25h\u{1b}[?1049l")
        tcsetattr(STDIN_FILENO, TCSANOW, &saved)
    }

    /// Redraws: home, each line cleared to its end, the rest of the screen cleared. Rows beyond the
    /// terminal's height are left out.
    func draw(_ lines: [String]) {
        var ws = winsize()
        let height = ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &ws) == 0 && ws.ws_row > 0 ? Int(ws.ws_row) : 24
        let width = ws.ws_col > 0 ? Int(ws.ws_col) : 200
        let shown = lines.prefix(height).map { String($0.prefix(width)) + "\u{1b}[K" }
        put("\u{1b}[H" + shown.joined(separator: "\r\n") + "\u{1b}[J")
    }

    /// One key byte, or nil after `timeout` seconds (or a signal).
    func readKey(timeout: Double) -> UInt8? {
        var pfd = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(timeout * 1000)) > 0 else { return nil }
        var b: UInt8 = 0
        return read(STDIN_FILENO, &b, 1) == 1 ? b : nil
    }

    private func put(_ s: String) {
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if n <= 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}
