import Foundation
import Logging
import ServiceSupport
import Testing

@Suite("Log lines")
struct LogInjectionTests {
    @Test("finding 8: a newline, CR or NUL in a logged value never splits the entry", arguments: [true, false])
    func finding8_logInjection(journal: Bool) {
        let h = StderrLogHandler(label: "tapswitchd", level: .debug, journal: journal)
        let hostile = "x\nINFO tapswitchd: VM stopped vm=forged\r\u{0}\u{1b}[2J\u{2028}end"
        let line = h.format(level: .info, message: "bad control request: \(hostile)",
                            metadata: ["error": "\(hostile)", "uid": "0", "quoted": "say \"hi\" \\ there"])
        // Exactly one line, ending in its newline, with no raw control character inside.
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F && $0.value != 0x2028 })
        #expect(line.contains(#"bad control request: x\nINFO tapswitchd: VM stopped vm=forged\r\0\u{1b}[2J\u{2028}end"#))
        // logfmt: values with spaces or escapes are quoted, simple ones stay bare.
        #expect(line.contains(#"error="x\nINFO tapswitchd: VM stopped vm=forged\r\0\u{1b}[2J\u{2028}end""#))
        #expect(line.contains(#"quoted="say \"hi\" \\ there""#))
        #expect(line.contains(" uid=0"))
    }

    @Test("plain values and messages are unchanged")
    func plain() {
        let h = StderrLogHandler(label: "t", level: .info, journal: true)
        #expect(h.format(level: .notice, message: "VM started", metadata: ["vm": "web1", "nics": "web1-0,web1-1"])
            == "<5>VM started nics=web1-0,web1-1 vm=web1\n")
        #expect(h.format(level: .error, message: "m", metadata: ["error": ""]) == "<3>m error=\"\"\n")
    }
}
