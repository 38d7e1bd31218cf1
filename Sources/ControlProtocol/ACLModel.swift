/// One rule of a port ACL as `tapswitchctl acl list` shows it: the rule and its hit counter.
public struct ACLRuleInfo: Codable, Sendable, Equatable {
    public var id: Int
    public var direction: String
    public var priority: Int
    /// The match as `key=value` words (empty: every frame of the direction).
    public var match: [String]
    public var action: String
    /// Frames the rule matched since it was added (or since the daemon started).
    public var hits: UInt64

    public init(id: Int, direction: String, priority: Int, match: [String], action: String, hits: UInt64) {
        self.id = id
        self.direction = direction
        self.priority = priority
        self.match = match
        self.action = action
        self.hits = hits
    }

    public init(_ rule: ACLRule, hits: UInt64) {
        self.init(id: rule.id, direction: rule.direction.rawValue, priority: rule.priority, match: rule.matchWords,
                  action: rule.action.rawValue, hits: hits)
    }
}

/// A port's ACL with its counters (`acl-list`, and the answer to `acl-add` / `acl-del`): rules in
/// evaluation order (`in` first, each direction lowest priority first), each direction's default
/// action and the frames that met it. Hits are 0 when the `acl` extension is not enabled
/// (`enforced` false).
public struct PortACLInfo: Codable, Sendable, Equatable {
    public var port: String
    public var rules: [ACLRuleInfo]
    public var defaultIn: String
    public var defaultOut: String
    public var defaultInHits: UInt64
    public var defaultOutHits: UInt64
    public var enforced: Bool

    public init(port: String, rules: [ACLRuleInfo], defaultIn: String, defaultOut: String, defaultInHits: UInt64 = 0,
                defaultOutHits: UInt64 = 0, enforced: Bool) {
        self.port = port
        self.rules = rules
        self.defaultIn = defaultIn
        self.defaultOut = defaultOut
        self.defaultInHits = defaultInHits
        self.defaultOutHits = defaultOutHits
        self.enforced = enforced
    }

    /// The ACL `settings` express, without counters.
    public init(port: String, acl: PortACL) {
        self.init(port: port, rules: acl.rules.map { ACLRuleInfo($0, hits: 0) }, defaultIn: acl.defaultAction(.in).rawValue,
                  defaultOut: acl.defaultAction(.out).rawValue, enforced: false)
    }
}
