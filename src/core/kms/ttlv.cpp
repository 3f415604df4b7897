#include "ttlv.hpp"

#include "../errors.hpp"

#include <cstdio>
#include <limits>
#include <utility>

namespace conn_crypto::kms::ttlv {
namespace {

[[noreturn]] void malformed(const std::string& what) {
    throw Error(ErrorKind::Crypto, "KMS malformed TTLV: " + what);
}

std::string hex_tag(std::uint32_t tag) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%06X", static_cast<unsigned>(tag));
    return buf;
}

std::uint32_t load_be32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           std::uint32_t{p[3]};
}

std::uint64_t load_be64(const std::uint8_t* p) {
    return (std::uint64_t{load_be32(p)} << 32) | load_be32(p + 4);
}

void put_be32(SecureBytes& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

void put_be64(SecureBytes& out, std::uint64_t v) {
    put_be32(out, static_cast<std::uint32_t>(v >> 32));
    put_be32(out, static_cast<std::uint32_t>(v));
}

void patch_be32(SecureBytes& out, std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(const std::uint8_t* s, std::size_t n) {
    std::size_t i = 0;
    while (i < n) {
        std::uint8_t c = s[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len;
        std::uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (std::size_t k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

std::size_t fixed_length(Type t) {
    switch (t) {
        case Type::Integer:
        case Type::Enumeration:
        case Type::Interval:
            return 4;
        case Type::LongInteger:
        case Type::Boolean:
        case Type::DateTime:
            return 8;
        default:
            return 0;
    }
}

bool known_type(std::uint8_t t) { return t >= 0x01 && t <= 0x0A; }

class Decoder {
public:
    Decoder(const std::uint8_t* data, const Limits& limits) : data_(data), limits_(limits) {}

    // Decodes one item at pos_, which must end at or before `end`.
    Item item(std::size_t end, std::size_t depth) {
        if (end - pos_ < kHeaderBytes) malformed("truncated item header at offset " + std::to_string(pos_));
        const std::uint8_t* h = data_ + pos_;
        Item it;
        it.tag = (std::uint32_t{h[0]} << 16) | (std::uint32_t{h[1]} << 8) | h[2];
        if (!known_type(h[3]))
            malformed("unknown type " + std::to_string(h[3]) + " for tag " + hex_tag(it.tag));
        it.type = static_cast<Type>(h[3]);
        std::uint32_t len32 = load_be32(h + 4);
        std::size_t len = len32;
        pos_ += kHeaderBytes;
        std::size_t avail = end - pos_;
        if (len > avail) malformed("length of tag " + hex_tag(it.tag) + " exceeds the enclosing data");
        std::size_t plen = padded(len);
        if (plen > avail) malformed("padding of tag " + hex_tag(it.tag) + " is truncated");

        const std::uint8_t* v = data_ + pos_;
        std::size_t fixed = fixed_length(it.type);
        if (fixed != 0 && len != fixed)
            malformed(std::string(type_name(it.type)) + " tag " + hex_tag(it.tag) + " has length " +
                      std::to_string(len) + ", expected " + std::to_string(fixed));

        switch (it.type) {
            case Type::Structure: {
                if (depth >= limits_.max_depth) malformed("structures nested too deeply");
                if (len % 8 != 0) malformed("structure " + hex_tag(it.tag) + " length is not a multiple of 8");
                std::size_t stop = pos_ + len;
                while (pos_ < stop) it.items.push_back(item(stop, depth + 1));
                return it;  // pos_ == stop, no padding for structures
            }
            case Type::Integer:
                it.number = static_cast<std::int32_t>(load_be32(v));
                break;
            case Type::Enumeration:
            case Type::Interval:
                it.number = load_be32(v);
                break;
            case Type::LongInteger:
            case Type::DateTime:
                it.number = static_cast<std::int64_t>(load_be64(v));
                break;
            case Type::Boolean: {
                std::uint64_t b = load_be64(v);
                if (b > 1) malformed("boolean tag " + hex_tag(it.tag) + " is neither 0 nor 1");
                it.number = static_cast<std::int64_t>(b);
                break;
            }
            case Type::TextString:
                if (!valid_utf8(v, len)) malformed("text string tag " + hex_tag(it.tag) + " is not valid UTF-8");
                it.text.assign(reinterpret_cast<const char*>(v), len);
                break;
            case Type::BigInteger:
                if (len == 0 || len % 8 != 0)
                    malformed("big integer tag " + hex_tag(it.tag) + " length is not a positive multiple of 8");
                it.bytes.assign(v, v + len);
                break;
            case Type::ByteString:
                it.bytes.assign(v, v + len);
                break;
        }
        for (std::size_t k = len; k < plen; ++k)
            if (v[k] != 0) malformed("non-zero padding after tag " + hex_tag(it.tag));
        pos_ += plen;
        return it;
    }

    std::size_t pos() const { return pos_; }

private:
    const std::uint8_t* data_;
    const Limits& limits_;
    std::size_t pos_ = 0;
};

void encode_into(const Item& it, SecureBytes& out, std::size_t depth) {
    if (it.tag > kMaxTag) throw Error(ErrorKind::Crypto, "KMS TTLV encoding: tag " + hex_tag(it.tag) + " exceeds 24 bits");
    if (depth > 64) throw Error(ErrorKind::Crypto, "KMS TTLV encoding: structures nested too deeply");
    out.push_back(static_cast<std::uint8_t>(it.tag >> 16));
    out.push_back(static_cast<std::uint8_t>(it.tag >> 8));
    out.push_back(static_cast<std::uint8_t>(it.tag));
    out.push_back(static_cast<std::uint8_t>(it.type));
    std::size_t len_at = out.size();
    put_be32(out, 0);
    std::size_t start = out.size();

    auto check_range = [&](std::int64_t lo, std::int64_t hi) {
        if (it.number < lo || it.number > hi)
            throw Error(ErrorKind::Crypto, std::string("KMS TTLV encoding: ") + type_name(it.type) + " value out of range");
    };
    switch (it.type) {
        case Type::Structure:
            for (const Item& child : it.items) encode_into(child, out, depth + 1);
            break;
        case Type::Integer:
            check_range(std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max());
            put_be32(out, static_cast<std::uint32_t>(static_cast<std::int32_t>(it.number)));
            break;
        case Type::Enumeration:
        case Type::Interval:
            check_range(0, std::numeric_limits<std::uint32_t>::max());
            put_be32(out, static_cast<std::uint32_t>(it.number));
            break;
        case Type::LongInteger:
        case Type::DateTime:
            put_be64(out, static_cast<std::uint64_t>(it.number));
            break;
        case Type::Boolean:
            check_range(0, 1);
            put_be64(out, static_cast<std::uint64_t>(it.number));
            break;
        case Type::TextString:
            out.insert(out.end(), it.text.begin(), it.text.end());
            break;
        case Type::BigInteger:
            if (it.bytes.empty() || it.bytes.size() % 8 != 0)
                throw Error(ErrorKind::Crypto, "KMS TTLV encoding: big integer length is not a positive multiple of 8");
            out.insert(out.end(), it.bytes.begin(), it.bytes.end());
            break;
        case Type::ByteString:
            out.insert(out.end(), it.bytes.begin(), it.bytes.end());
            break;
        default:
            throw Error(ErrorKind::Crypto, "KMS TTLV encoding: unknown item type");
    }
    std::size_t len = out.size() - start;
    if (len > std::numeric_limits<std::uint32_t>::max())
        throw Error(ErrorKind::Crypto, "KMS TTLV encoding: item exceeds 4 GiB");
    patch_be32(out, len_at, static_cast<std::uint32_t>(len));
    out.resize(start + padded(len), 0);
}

}  // namespace

const char* type_name(Type t) noexcept {
    switch (t) {
        case Type::Structure: return "Structure";
        case Type::Integer: return "Integer";
        case Type::LongInteger: return "Long Integer";
        case Type::BigInteger: return "Big Integer";
        case Type::Enumeration: return "Enumeration";
        case Type::Boolean: return "Boolean";
        case Type::TextString: return "Text String";
        case Type::ByteString: return "Byte String";
        case Type::DateTime: return "Date-Time";
        case Type::Interval: return "Interval";
    }
    return "unknown type";
}

Item Item::structure(std::uint32_t tag, std::vector<Item> items) {
    Item it;
    it.tag = tag;
    it.type = Type::Structure;
    it.items = std::move(items);
    return it;
}

namespace {
Item numeric(std::uint32_t tag, Type type, std::int64_t v) {
    Item it;
    it.tag = tag;
    it.type = type;
    it.number = v;
    return it;
}
}  // namespace

Item Item::integer(std::uint32_t tag, std::int32_t v) { return numeric(tag, Type::Integer, v); }
Item Item::long_integer(std::uint32_t tag, std::int64_t v) { return numeric(tag, Type::LongInteger, v); }
Item Item::enumeration(std::uint32_t tag, std::uint32_t v) { return numeric(tag, Type::Enumeration, v); }
Item Item::boolean(std::uint32_t tag, bool v) { return numeric(tag, Type::Boolean, v ? 1 : 0); }
Item Item::date_time(std::uint32_t tag, std::int64_t seconds) { return numeric(tag, Type::DateTime, seconds); }
Item Item::interval(std::uint32_t tag, std::uint32_t seconds) { return numeric(tag, Type::Interval, seconds); }

Item Item::big_integer(std::uint32_t tag, SecureBytes v) {
    Item it;
    it.tag = tag;
    it.type = Type::BigInteger;
    it.bytes = std::move(v);
    return it;
}

Item Item::text_string(std::uint32_t tag, std::string v) {
    Item it;
    it.tag = tag;
    it.type = Type::TextString;
    it.text = std::move(v);
    return it;
}

Item Item::byte_string(std::uint32_t tag, const std::uint8_t* data, std::size_t n) {
    Item it;
    it.tag = tag;
    it.type = Type::ByteString;
    if (n) it.bytes.assign(data, data + n);
    return it;
}

const Item* Item::find(std::uint32_t want) const noexcept {
    for (const Item& child : items)
        if (child.tag == want) return &child;
    return nullptr;
}

const Item* Item::find_typed(std::uint32_t want, Type t, const char* what) const {
    const Item* child = find(want);
    if (child && child->type != t)
        throw Error(ErrorKind::Crypto, std::string("KMS malformed response: ") + what + " is a " +
                                           type_name(child->type) + ", expected " + type_name(t));
    return child;
}

const Item& Item::require(std::uint32_t want, Type t, const char* what) const {
    const Item* child = find_typed(want, t, what);
    if (!child) throw Error(ErrorKind::Crypto, std::string("KMS malformed response: ") + what + " is missing");
    return *child;
}

SecureBytes encode(const Item& item) {
    SecureBytes out;
    out.reserve(256);
    encode_into(item, out, 1);
    return out;
}

Item decode(const std::uint8_t* data, std::size_t n, const Limits& limits) {
    if (n > limits.max_message)
        malformed("message of " + std::to_string(n) + " bytes exceeds the limit of " +
                  std::to_string(limits.max_message));
    if (n == 0 || data == nullptr) malformed("empty message");
    Decoder d(data, limits);
    Item it = d.item(n, 0);
    if (d.pos() != n) malformed(std::to_string(n - d.pos()) + " trailing bytes after the message");
    return it;
}

std::size_t message_body_length(const std::uint8_t header[kHeaderBytes], std::uint32_t expected_tag,
                                const Limits& limits) {
    std::uint32_t tag = (std::uint32_t{header[0]} << 16) | (std::uint32_t{header[1]} << 8) | header[2];
    if (tag != expected_tag) malformed("message starts with tag " + hex_tag(tag) + ", expected " + hex_tag(expected_tag));
    if (header[3] != static_cast<std::uint8_t>(Type::Structure)) malformed("message is not a structure");
    std::size_t len = load_be32(header + 4);
    if (len % 8 != 0) malformed("message length is not a multiple of 8");
    if (len > limits.max_message || kHeaderBytes + len > limits.max_message)
        malformed("message of " + std::to_string(kHeaderBytes + len) + " bytes exceeds the limit of " +
                  std::to_string(limits.max_message));
    return len;
}

}  // namespace conn_crypto::kms::ttlv
