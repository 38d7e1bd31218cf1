/// Builders for Ethernet test frames and MAC address helpers.
public enum TestFrames {
    /// The broadcast MAC address.
    public static let broadcastMAC: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]

    /// An Ethernet II frame `dst | src | [0x8100 | vlan] | etherType | payload`.
    ///
    /// `vlan` is the full 16-bit TCI (PCP, DEI and VID). The payload is padded with zeros to the 60-byte
    /// minimum (without FCS), as a NIC would.
    public static func ethernet(dst: [UInt8], src: [UInt8], etherType: UInt16, vlan: UInt16? = nil, payload: [UInt8]) -> [UInt8] {
        precondition(dst.count == 6 && src.count == 6, "MAC addresses are 6 bytes")
        var frame = dst + src
        frame.reserveCapacity(18 + payload.count)
        if let vlan {
            frame += [0x81, 0x00, UInt8(vlan >> 8), UInt8(vlan & 0xff)]
        }
        frame += [UInt8(etherType >> 8), UInt8(etherType & 0xff)]
        frame += payload
        if frame.count < 60 { frame += [UInt8](repeating: 0, count: 60 - frame.count) }
        return frame
    }

    /// A broadcast frame from `src` (experimental EtherType 0x88b5 by default).
    public static func broadcast(src: [UInt8], etherType: UInt16 = 0x88b5, vlan: UInt16? = nil, payload: [UInt8] = []) -> [UInt8] {
        ethernet(dst: broadcastMAC, src: src, etherType: etherType, vlan: vlan, payload: payload)
    }

    /// A locally administered unicast MAC `02:00:00:00:hi:lo` derived from `n` (handy for tests).
    public static func mac(_ n: UInt16) -> [UInt8] {
        [0x02, 0x00, 0x00, 0x00, UInt8(n >> 8), UInt8(n & 0xff)]
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`). Returns nil for anything else.
    public static func parseMAC(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let fields = parts.count == 6 ? parts : text.split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for field in fields {
            guard field.count == 2, let byte = UInt8(field, radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }

    /// Formats a MAC as lowercase `aa:bb:cc:dd:ee:ff`.
    public static func formatMAC(_ mac: [UInt8]) -> String {
        mac.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined(separator: ":")
    }
}
