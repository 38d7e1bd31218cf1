/// `tapswitchctl capture`: which ports, which directions, how much of each frame, how many frames,
/// whether to add the frames the switch dropped. The daemon answers with one response line, then
/// streams pcapng until the count is reached, the client half-closes, or the ports are gone.
public struct CaptureRequest: Sendable, Equatable, Codable {
    public enum Directions: String, Sendable, Codable, CaseIterable {
        case `in`, out, both
        public var includesIn: Bool { self != .out }
        public var includesOut: Bool { self != .in }
    }

    public static let defaultSnaplen = 262_144
    public static let maxPorts = 64

    public var ports: [String]
    public var direction: Directions
    /// Stop after this many frames (nil: until the client stops).
    public var count: Int?
    /// Bytes kept of each frame (the rest is cut, its length recorded).
    public var snaplen: Int
    /// Add the frames the switch dropped at these ports, with reason and dropping extension.
    public var drops: Bool

    public init(ports: [String], direction: Directions = .both, count: Int? = nil, snaplen: Int = CaptureRequest.defaultSnaplen,
                drops: Bool = false) {
        self.ports = ports
        self.direction = direction
        self.count = count
        self.snaplen = snaplen
        self.drops = drops
    }

    /// Checks the fields, naming the bad one.
    public func validate() throws(FieldError) {
        if ports.isEmpty { throw FieldError(field: "ports", message: "give at least one port") }
        if ports.count > Self.maxPorts { throw FieldError(field: "ports", message: "at most \(Self.maxPorts) ports per capture") }
        for p in ports { _ = try Validate.interfaceName(p, field: "ports") }
        if Set(ports).count != ports.count { throw FieldError(field: "ports", message: "a port is listed twice") }
        if let count, count <= 0 { throw FieldError(field: "count", message: "\(count) is not a positive number of frames") }
        if snaplen < 14 || snaplen > Self.defaultSnaplen {
            throw FieldError(field: "snaplen", message: "\(snaplen) is outside 14...\(Self.defaultSnaplen)")
        }
    }
}
