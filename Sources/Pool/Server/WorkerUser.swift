import Glibc

/// The user and group workers run as (`--user`, `--group`): a root master drops its workers to
/// a service account, as PHP-FPM's `user`/`group` and Gunicorn's `--user` do. The master stays
/// root (it owns the socket, the queues and the cleanup).
public struct WorkerUser: Sendable, Equatable, CustomStringConvertible {
    public var uid: uid_t
    public var gid: gid_t
    /// The user's name for logs (its number when the user database has none).
    public var name: String
    /// The user's home directory from the user database; `nil` when the database has no entry.
    public var home: String?
    /// Every group the workers get: `gid` first, then the user's supplementary groups from the
    /// group database (initgroups' list, as PHP-FPM and Gunicorn give their workers); `[gid]`
    /// for a user the database does not know.
    public var groups: [gid_t]

    public init(uid: uid_t, gid: gid_t, name: String, home: String? = nil, groups: [gid_t]? = nil) {
        self.uid = uid
        self.gid = gid
        self.name = name
        self.home = home
        self.groups = groups ?? [gid]
    }

    public var description: String { "\(name) (uid \(uid), gid \(gid))" }

    /// Looks `user` up in the user database, by name or number; `group` likewise, by default the
    /// user's primary group. A number the database does not know needs `group`.
    ///
    /// The corresponding C functions are `getpwnam`, `getpwuid` and `getgrnam`.
    public static func lookUp(user: String, group: String?) throws -> WorkerUser {
        let entry = getpwnam(user) ?? uid_t(user).flatMap { getpwuid($0) }
        let uid: uid_t
        let name: String
        var primaryGroup: gid_t? = nil
        var home: String? = nil
        if let entry {
            uid = entry.pointee.pw_uid
            name = String(cString: entry.pointee.pw_name)
            primaryGroup = entry.pointee.pw_gid
            home = entry.pointee.pw_dir.map { String(cString: $0) }
        } else if let number = uid_t(user) {
            uid = number
            name = user
        } else {
            throw ConfigurationError("--user \(user): no such user")
        }
        let gid: gid_t
        if let group {
            gid = try lookUpGroup(group, flag: "--group")
        } else if let primaryGroup {
            gid = primaryGroup
        } else {
            throw ConfigurationError("--user \(user) is not in the user database: give --group too")
        }
        let groups = entry != nil ? groupList(of: name, primary: gid) : [gid]
        return WorkerUser(uid: uid, gid: gid, name: name, home: home, groups: groups)
    }

    /// `primary` and the groups the group database lists `user` in, without repeats; `primary`
    /// alone if the lookup fails.
    ///
    /// The corresponding C function is `getgrouplist`.
    static func groupList(of user: String, primary: gid_t) -> [gid_t] {
        var count: Int32 = 32
        while true {
            var groups = [gid_t](repeating: 0, count: Int(count))
            let previous = count
            if getgrouplist(user, primary, &groups, &count) >= 0 {
                var seen = Set<gid_t>()
                return [primary] + groups.prefix(Int(count)).filter { $0 != primary && seen.insert($0).inserted }
            }
            // -1: too small, `count` now says how many; an unchanged count would loop for ever.
            guard count > previous, count <= 65_536 else { return [primary] }
        }
    }

    /// Sets `USER`, `LOGNAME` and `HOME` to this user's, as PHP-FPM does for a pool's `user` and
    /// `su -` would: a handler, or a program it runs, otherwise writes its caches and dotfiles
    /// into root's home as another user. A user the database does not know gets its number as
    /// name and `/` as home (root's would be wrong; an unset HOME crashes some runtimes). For a
    /// worker just switched to this user (single-threaded: setenv is safe there).
    ///
    /// The corresponding C function is `setenv`.
    public func exportEnvironment() {
        setenv("USER", name, 1)
        setenv("LOGNAME", name, 1)
        setenv("HOME", home ?? "/", 1)
    }
}

/// A group's id from its name or number (`flag` names the option in the error).
///
/// The corresponding C function is `getgrnam`.
public func lookUpGroup(_ group: String, flag: String) throws -> gid_t {
    if let entry = getgrnam(group) { return entry.pointee.gr_gid }
    // (gid_t)-1 is chown's "leave unchanged": the flag would silently do nothing.
    if let number = gid_t(group), number != gid_t.max { return number }
    throw ConfigurationError("\(flag) \(group): no such group")
}
