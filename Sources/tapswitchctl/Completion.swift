import ArgumentParser
import ControlProtocol
import Foundation

/// Shell completion helpers (`completion: .custom`): names come from the running daemon, asked
/// with a short timeout so a missing daemon only means no suggestions.
enum Completions {
    /// Seconds a completion may wait for tapswitchd.
    static let timeout = 2.0

    /// The NIC options of `vm start` (parsed by `NICArguments`, so ArgumentParser does not know them).
    static var nicFlags: [String] { (["nic"] + NICArguments.perNICFlags).map { "--" + $0 } }

    /// VM names on the switch.
    @Sendable static func vmNames(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        Array(Set(snapshot(words)?.ports.compactMap { $0.nic?.vmName } ?? [])).sorted()
    }

    /// `vm start`'s first argument: VM names, or the NIC flags for a word starting with "-" (bash
    /// asks the first positional's completion for the word right after the name).
    @Sendable static func vmNamesOrNICFlags(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        prefix.hasPrefix("-") ? nicFlagCompletions(words, index, prefix) : vmNames(words, index, prefix)
    }

    /// Port names on the switch.
    @Sendable static func portNames(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        (snapshot(words)?.ports.map(\.name) ?? []).sorted()
    }

    /// Extension names this daemon offers.
    @Sendable static func extensionNames(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        guard let response = try? ControlConnection.roundTrip(.extensions, path: socketPath(words), timeout: timeout) else { return [] }
        return (response.extensions ?? []).map(\.name).sorted()
    }

    /// `port set`: the port settings as `key=`.
    @Sendable static func settingAssignments(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        PortSettings.keys.map { $0 + "=" }
    }

    /// `port reset`: the port settings' keys.
    @Sendable static func settingKeys(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        PortSettings.keys
    }

    /// After the VM name of `vm start`: the NIC flags, and values where a flag takes a known set.
    @Sendable static func nicFlagCompletions(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        let previous = index > 0 && index - 1 < words.count ? words[index - 1] : ""
        switch previous {
        case "--type": return PortType.vmNICTypes.map(\.rawValue)
        case "--owner": return users()
        case "--nic", "--mac", "--group", "--mtu", "--vlan": return []
        default: return nicFlags
        }
    }

    /// `--socket PATH` from the words being completed, else the default.
    private static func socketPath(_ words: [String]) -> String {
        if let i = words.firstIndex(of: "--socket"), i + 1 < words.count { return words[i + 1] }
        if let w = words.first(where: { $0.hasPrefix("--socket=") }) { return String(w.dropFirst("--socket=".count)) }
        if let env = ProcessInfo.processInfo.environment[Wire.socketEnvironmentVariable], !env.isEmpty { return env }
        return Wire.defaultSocketPath
    }

    private static func snapshot(_ words: [String]) -> SwitchSnapshot? {
        (try? ControlConnection.roundTrip(.show, path: socketPath(words), timeout: timeout))?.snapshot
    }

    private static func users() -> [String] {
        guard let text = try? String(contentsOfFile: "/etc/passwd", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { $0.split(separator: ":").first.map(String.init) }
    }
}

/// "Did you mean" for mistyped subcommands, checked before ArgumentParser's generic message.
enum CommandSuggestion {
    /// A one-line error for the first unknown subcommand in `arguments`, or nil when the words
    /// name known commands (or none).
    static func check(_ arguments: [String], root: ParsableCommand.Type) -> String? {
        // Completion and tooling entry points carry words that are not commands.
        if arguments.contains(where: { $0.hasPrefix("---") || $0 == "--generate-completion-script" || $0 == "--experimental-dump-help" }) {
            return nil
        }
        var subcommands: [ParsableCommand.Type] = root.configuration.subcommands
        var path = [root._commandName]
        var i = 0
        while i < arguments.count {
            let word = arguments[i]
            if word == "--socket" {
                i += 2
                continue
            }
            if word.hasPrefix("-") {
                i += 1
                continue
            }
            if subcommands.isEmpty || word == "help" { return nil }
            var names: [String] = []
            var next: ParsableCommand.Type?
            for sub in subcommands {
                let name = sub._commandName
                names.append(name)
                if name == word { next = sub }
            }
            guard let next else {
                let prefix = path.joined(separator: " ")
                var best: (name: String, distance: Int)?
                for name in names {
                    let d = distance(word, name)
                    if best == nil || d < best!.distance { best = (name, d) }
                }
                if let best, best.distance <= max(2, word.count / 3) {
                    return "unknown command '\(prefix) \(word)'; did you mean '\(prefix) \(best.name)'?"
                }
                return "unknown command '\(prefix) \(word)' (commands: \(names.joined(separator: ", ")))"
            }
            subcommands = next.configuration.subcommands
            path.append(word)
            i += 1
        }
        return nil
    }

    /// Damerau-Levenshtein (optimal string alignment) distance: a swap of two letters counts once.
    static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a), y = Array(b)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var d = [[Int]](repeating: [Int](repeating: 0, count: y.count + 1), count: x.count + 1)
        for i in 0...x.count { d[i][0] = i }
        for j in 0...y.count { d[0][j] = j }
        for i in 1...x.count {
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[x.count][y.count]
    }
}

extension Completions {
    /// Host network devices (for `port add-external`).
    @Sendable static func hostDevices(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []).sorted()
    }
}
