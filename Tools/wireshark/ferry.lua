-- Wireshark dissector for the Ferry protocol (SPEC.md, versions 1 to 4).
--
-- Decodes the magic, every frame's header (type, flags, length), every message's fields under SPEC.md's names,
-- and checks each frame's CRC-32, flagging a mismatch as an expert error. Frames split across TCP segments are
-- reassembled; several frames in one segment are each dissected. Registered on TCP port 8888, and as a heuristic
-- dissector that recognises a connection by its first bytes (the magic) on any port.
--
--   wireshark -X lua_script:Tools/wireshark/ferry.lua capture.pcap
--   tshark -X lua_script:Tools/wireshark/ferry.lua -r capture.pcap -V -Y ferry
--
-- Works with Lua 5.2 (bit32) and 5.3+ (native operators).

local ferry = Proto("ferry", "Ferry file transfer protocol")

local MAGIC = { 0x89, 0x46, 0x45, 0x52, 0x52, 0x59, 0x0D, 0x0A }
local HEADER_LENGTH, TRAILER_LENGTH = 10, 4
-- Longer frames than this are not reassembled (a receiver refuses any length above its announced limit anyway).
local LARGEST_FRAME = 64 * 1024 * 1024

local TYPES = {
    [0x01] = "HELLO", [0x10] = "LIST", [0x11] = "RETR", [0x12] = "STOR", [0x13] = "EXIT", [0x14] = "DELETE",
    [0x15] = "RENAME", [0x16] = "AUTH", [0x20] = "OK", [0x21] = "ERROR", [0x22] = "LIST_ENTRIES",
    [0x23] = "LIST_END", [0x24] = "FILE_INFO", [0x25] = "READY", [0x30] = "DATA", [0x31] = "END", [0x32] = "ABORT",
}

local ERRORS = {
    [100] = "no such file", [101] = "file exists", [102] = "invalid name", [103] = "file too large",
    [104] = "checksum mismatch", [105] = "length mismatch", [106] = "aborted", [107] = "storage failure",
    [108] = "unsupported", [109] = "invalid offset", [110] = "permission denied", [111] = "authentication failed",
    [112] = "upload in progress", [200] = "not a Ferry peer", [201] = "version mismatch", [202] = "bad handshake",
    [203] = "bad checksum", [204] = "frame too large", [205] = "unknown frame type", [206] = "malformed frame",
    [207] = "unexpected frame", [208] = "server busy", [209] = "idle timeout", [210] = "shutting down",
    [211] = "too many failed log-ins", [212] = "TLS required",
}

local LOGIN = { [0] = "none", [1] = "offered", [2] = "required" }

local f = {
    magic = ProtoField.bytes("ferry.magic", "Magic"),
    type = ProtoField.uint8("ferry.type", "Type", base.HEX, TYPES),
    flags = ProtoField.uint8("ferry.flags", "Flags", base.HEX),
    length = ProtoField.uint64("ferry.length", "Length", base.DEC),
    crc = ProtoField.uint32("ferry.crc", "CRC-32", base.HEX),
    crc_status = ProtoField.string("ferry.crc.status", "CRC-32 status"),
    min_version = ProtoField.uint16("ferry.min_version", "min_version"),
    max_version = ProtoField.uint16("ferry.max_version", "max_version"),
    max_frame_payload = ProtoField.uint64("ferry.max_frame_payload", "max_frame_payload"),
    max_file_size = ProtoField.uint64("ferry.max_file_size", "max_file_size"),
    login = ProtoField.uint8("ferry.login", "login", base.DEC, LOGIN),
    offset = ProtoField.uint64("ferry.offset", "offset"),
    size = ProtoField.uint64("ferry.size", "size"),
    name = ProtoField.string("ferry.name", "name"),
    options = ProtoField.uint8("ferry.options", "options", base.HEX),
    token = ProtoField.bytes("ferry.token", "token"),
    if_size = ProtoField.uint64("ferry.if_size", "if_size"),
    if_modified = ProtoField.int64("ferry.if_modified", "if_modified"),
    from = ProtoField.string("ferry.from", "from"),
    to = ProtoField.string("ferry.to", "to"),
    user = ProtoField.string("ferry.user", "user"),
    password_length = ProtoField.uint16("ferry.password_length", "password (bytes; not shown)"),
    code = ProtoField.uint16("ferry.code", "code", base.DEC, ERRORS),
    message = ProtoField.string("ferry.message", "message"),
    count = ProtoField.uint64("ferry.count", "count"),
    entry = ProtoField.none("ferry.entry", "entry"),
    modified = ProtoField.int64("ferry.modified", "modified"),
    data = ProtoField.bytes("ferry.data", "data"),
    data_length = ProtoField.uint32("ferry.data_length", "data length"),
    end_length = ProtoField.uint64("ferry.end.length", "length"),
    end_crc = ProtoField.uint32("ferry.end.crc", "crc", base.HEX),
    file_crc = ProtoField.uint32("ferry.end.file_crc", "file_crc", base.HEX),
}
ferry.fields = {}
for _, field in pairs(f) do table.insert(ferry.fields, field) end

local expert_crc = ProtoExpert.new("ferry.crc.bad", "Frame CRC-32 mismatch", expert.group.CHECKSUM, expert.severity.ERROR)
local expert_malformed = ProtoExpert.new("ferry.malformed", "Malformed payload", expert.group.MALFORMED, expert.severity.ERROR)
local expert_unknown = ProtoExpert.new("ferry.unknown_type", "Unknown frame type", expert.group.UNDECODED, expert.severity.WARN)
ferry.experts = { expert_crc, expert_malformed, expert_unknown }

ferry.prefs.check_crc = Pref.bool("Check CRC-32", true, "Verify every frame's CRC-32 (slow on large DATA frames)")

-- CRC-32 as zlib computes it (reflected 0xEDB88320, initial value and final XOR 0xFFFFFFFF).
local band, bxor, rshift, bnot
if bit32 then
    band, bxor, rshift, bnot = bit32.band, bit32.bxor, bit32.rshift, bit32.bnot
else
    band = load("return function(a, b) return a & b end")()
    bxor = load("return function(a, b) return a ~ b end")()
    rshift = load("return function(a, n) return (a & 0xFFFFFFFF) >> n end")()
    bnot = load("return function(a) return (~a) & 0xFFFFFFFF end")()
end
local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if band(c, 1) == 1 then c = bxor(0xEDB88320, rshift(c, 1)) else c = rshift(c, 1) end
    end
    crc_table[i] = c
end
local function crc32(bytes)
    local crc = 0xFFFFFFFF
    for i = 0, bytes:len() - 1 do
        crc = bxor(crc_table[band(bxor(crc, bytes:get_index(i)), 0xFF)], rshift(crc, 8))
    end
    return band(bnot(crc), 0xFFFFFFFF)
end

local function is_magic(tvb, offset, available)
    for i = 1, math.min(available, 8) do
        if tvb(offset + i - 1, 1):uint() ~= MAGIC[i] then return false end
    end
    return true
end

-- `time`: nanoseconds since 1970, shown as UTC.
local function time_text(value)
    local ns = value:tonumber()
    local seconds = math.floor(ns / 1e9)
    return os.date("!%Y-%m-%dT%H:%M:%SZ", seconds)
end

-- Reads the fields of one payload into `tree`; returns a short summary for the Info column, or nil and an error.
local function string_field(payload, pos, tree, field)
    if payload:len() < pos + 2 then return nil end
    local length = payload(pos, 2):uint()
    if payload:len() < pos + 2 + length then return nil end
    local text = length > 0 and payload(pos + 2, length):string(ENC_UTF_8) or ""
    if length > 0 then tree:add(field, payload(pos, 2 + length), text) else tree:add(field, payload(pos, 2), "") end
    return pos + 2 + length, text
end

local decoders = {}

decoders[0x01] = function(p, t)
    if p:len() < 20 then return nil end
    t:add(f.min_version, p(0, 2)); t:add(f.max_version, p(2, 2))
    t:add(f.max_frame_payload, p(4, 8)); t:add(f.max_file_size, p(12, 8))
    local login = ""
    if p:len() >= 21 then t:add(f.login, p(20, 1)); login = " login=" .. (LOGIN[p(20, 1):uint()] or p(20, 1):uint()) end
    return string.format("versions %d-%d", p(0, 2):uint(), p(2, 2):uint()) .. login
end
decoders[0x11] = function(p, t)
    if p:len() < 8 then return nil end
    t:add(f.offset, p(0, 8))
    local pos, name = string_field(p, 8, t, f.name)
    if not pos then return nil end
    local text = string.format("name=%q offset=%s", name, p(0, 8):uint64())
    if p:len() >= pos + 16 then
        t:add(f.if_size, p(pos, 8)); t:add(f.if_modified, p(pos + 8, 8))
        text = text .. " if_size=" .. tostring(p(pos, 8):uint64())
    end
    return text
end
decoders[0x12] = function(p, t)
    if p:len() < 17 then return nil end
    t:add(f.size, p(0, 8)); t:add(f.offset, p(8, 8)); t:add(f.options, p(16, 1))
    local pos, name = string_field(p, 17, t, f.name)
    if not pos then return nil end
    local text = string.format("name=%q size=%s offset=%s", name, p(0, 8):uint64(), p(8, 8):uint64())
    if p:len() >= pos + 16 then t:add(f.token, p(pos, 16)); text = text .. " token" end
    return text
end
decoders[0x14] = function(p, t)
    local pos, name = string_field(p, 0, t, f.name)
    if not pos then return nil end
    return string.format("name=%q", name)
end
decoders[0x15] = function(p, t)
    if p:len() < 1 then return nil end
    t:add(f.options, p(0, 1))
    local pos, from = string_field(p, 1, t, f.from)
    if not pos then return nil end
    local last, to = string_field(p, pos, t, f.to)
    if not last then return nil end
    return string.format("from=%q to=%q", from, to)
end
decoders[0x16] = function(p, t)
    local pos, user = string_field(p, 0, t, f.user)
    if not pos or p:len() < pos + 2 then return nil end
    t:add(f.password_length, p(pos, 2))
    return string.format("user=%q", user)
end
decoders[0x21] = function(p, t)
    if p:len() < 2 then return nil end
    t:add(f.code, p(0, 2))
    local pos, message = string_field(p, 2, t, f.message)
    if not pos then return nil end
    local code = p(0, 2):uint()
    return string.format("code=%d (%s) message=%q", code, ERRORS[code] or "unknown", message)
end
decoders[0x22] = function(p, t)
    if p:len() < 4 then return nil end
    local count = p(0, 4):uint()
    t:add(f.count, p(0, 4))
    local pos = 4
    for _ = 1, count do
        if p:len() < pos + 18 then return nil end
        local length = p(pos + 16, 2):uint()
        if p:len() < pos + 18 + length then return nil end
        local entry = t:add(f.entry, p(pos, 18 + length))
        entry:add(f.size, p(pos, 8))
        entry:add(f.modified, p(pos + 8, 8)):append_text(" (" .. time_text(p(pos + 8, 8):int64()) .. ")")
        local _, name = string_field(p, pos + 16, entry, f.name)
        entry:set_text(string.format("entry: %s, %s bytes", name, p(pos, 8):uint64()))
        pos = pos + 18 + length
    end
    return string.format("count=%d", count)
end
decoders[0x23] = function(p, t)
    if p:len() < 8 then return nil end
    t:add(f.count, p(0, 8))
    return "count=" .. tostring(p(0, 8):uint64())
end
decoders[0x24] = function(p, t)
    if p:len() < 24 then return nil end
    t:add(f.size, p(0, 8)); t:add(f.offset, p(8, 8))
    t:add(f.modified, p(16, 8)):append_text(" (" .. time_text(p(16, 8):int64()) .. ")")
    return string.format("size=%s offset=%s", p(0, 8):uint64(), p(8, 8):uint64())
end
decoders[0x25] = function(p, t)
    if p:len() < 8 then return nil end
    t:add(f.offset, p(0, 8))
    local text = "offset=" .. tostring(p(0, 8):uint64())
    if p:len() >= 24 then t:add(f.token, p(8, 16)); text = text .. " token" end
    return text
end
decoders[0x30] = function(p, t)
    t:add(f.data_length, p:len())
    if p:len() > 0 then t:add(f.data, p(0, p:len())) end
    return string.format("%d bytes", p:len())
end
decoders[0x31] = function(p, t)
    if p:len() < 12 then return nil end
    t:add(f.end_length, p(0, 8)); t:add(f.end_crc, p(8, 4))
    local text = string.format("length=%s crc=0x%08x", p(0, 8):uint64(), p(8, 4):uint())
    if p:len() >= 16 then t:add(f.file_crc, p(12, 4)); text = text .. string.format(" file_crc=0x%08x", p(12, 4):uint()) end
    return text
end
for _, empty in ipairs({ 0x10, 0x13, 0x20, 0x32 }) do
    decoders[empty] = function() return "" end
end

-- One whole frame at the start of `tvb`.
local function dissect_frame(tvb, pinfo, tree)
    local kind = tvb(0, 1):uint()
    local length = tvb(2, 8):uint64():tonumber()
    local name = TYPES[kind] or (kind >= 0x80 and string.format("optional 0x%02x", kind) or string.format("unknown 0x%02x", kind))
    local item = tree:add(ferry, tvb(0, HEADER_LENGTH + length + TRAILER_LENGTH))
    item:add(f.type, tvb(0, 1)); item:add(f.flags, tvb(1, 1)); item:add(f.length, tvb(2, 8))
    local payload = length > 0 and tvb(HEADER_LENGTH, length):tvb() or ByteArray.new():tvb("empty payload")
    local summary
    if decoders[kind] then
        summary = decoders[kind](payload, item)
        if summary == nil then
            item:add_proto_expert_info(expert_malformed, name .. " payload does not have its type's layout")
            summary = "(malformed)"
        end
    else
        summary = ""
        if kind < 0x80 then item:add_proto_expert_info(expert_unknown) end
    end
    local crc_item = item:add(f.crc, tvb(HEADER_LENGTH + length, 4))
    local declared = tvb(HEADER_LENGTH + length, 4):uint()
    if ferry.prefs.check_crc then
        local actual = crc32(tvb(0, HEADER_LENGTH + length):bytes())
        if actual == declared then
            crc_item:append_text(" [correct]")
            item:add(f.crc_status, "good")
        else
            crc_item:append_text(string.format(" [incorrect, should be 0x%08x]", actual))
            item:add(f.crc_status, "bad")
            crc_item:add_proto_expert_info(expert_crc, string.format("Frame CRC-32 mismatch: 0x%08x declared, 0x%08x computed", declared, actual))
            summary = summary .. " [BAD CRC]"
        end
    end
    item:append_text(", " .. name .. (summary ~= "" and (" " .. summary) or ""))
    return name .. (summary ~= "" and (" " .. summary) or "")
end

-- The packet whose Info column this dissector last wrote.
local info_packet = nil

function ferry.dissector(tvb, pinfo, tree)
    local total = tvb:len()
    local offset = 0
    local infos = {}
    while offset < total do
        local available = total - offset
        if tvb(offset, 1):uint() == MAGIC[1] and is_magic(tvb, offset, available) then
            if available < 8 then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = 8 - available
                break
            end
            local item = tree:add(ferry, tvb(offset, 8), "Ferry magic")
            item:add(f.magic, tvb(offset, 8))
            table.insert(infos, "magic")
            offset = offset + 8
        else
            if available < HEADER_LENGTH then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                break
            end
            local length = tvb(offset + 2, 8):uint64()
            if length > UInt64(LARGEST_FRAME) then
                local item = tree:add(ferry, tvb(offset, available), "Ferry frame too large to reassemble")
                item:add_proto_expert_info(expert_malformed, "length " .. tostring(length) .. " is beyond any receiver's limit")
                break
            end
            local frame_length = HEADER_LENGTH + length:tonumber() + TRAILER_LENGTH
            if available < frame_length then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = frame_length - available
                break
            end
            table.insert(infos, dissect_frame(tvb(offset, frame_length):tvb(), pinfo, tree))
            offset = offset + frame_length
        end
    end
    if #infos > 0 then
        pinfo.cols.protocol = "Ferry"
        -- A packet may end several reassembled chunks, each dissected in a call of its own: they add up.
        local text = table.concat(infos, ", ")
        if info_packet ~= pinfo.number then
            info_packet = pinfo.number
            pinfo.cols.info:clear_fence()
            pinfo.cols.info:set(text)
        else
            pinfo.cols.info:append(", " .. text)
        end
    end
    -- Everything is accepted, including bytes left for reassembly: returning less would make TCP take the packet for
    -- another protocol's and try the heuristic dissectors on it.
    return total
end

DissectorTable.get("tcp.port"):add(8888, ferry)

-- Any port: a connection whose first bytes are the magic is Ferry from then on (at least 4 of its 8 bytes, since a
-- first segment may be cut inside it).
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < 4 or not is_magic(tvb, 0, tvb:len()) then return false end
    pinfo.conversation = ferry
    ferry.dissector(tvb, pinfo, tree)
    return true
end
ferry:register_heuristic("tcp", heuristic)
