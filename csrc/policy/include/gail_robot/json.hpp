// A small JSON reader for the policy's meta.json (objects, arrays, numbers, strings, bools, null).
//
// Part of the public API of gail_robot::policy (Policy::meta().raw): the library and its users must not
// depend on a JSON package, and meta.json is written by gail_robot.export with Python's json module, so a
// strict recursive-descent reader is enough here.
#pragma once

#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace gail_robot::json {

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is_null() const { return kind == Kind::Null; }
  bool has(const std::string& key) const { return kind == Kind::Object && object.count(key) > 0; }

  const Value& at(const std::string& key) const {
    if (kind != Kind::Object) throw std::runtime_error("meta.json: expected an object around '" + key + "'");
    auto it = object.find(key);
    if (it == object.end()) throw std::runtime_error("meta.json: missing key '" + key + "'");
    return it->second;
  }
  double as_number() const {
    if (kind != Kind::Number) throw std::runtime_error("meta.json: expected a number");
    return number;
  }
  int as_int() const { return static_cast<int>(as_number()); }
  bool as_bool() const {
    if (kind != Kind::Bool) throw std::runtime_error("meta.json: expected a boolean");
    return boolean;
  }
  const std::string& as_string() const {
    if (kind != Kind::String) throw std::runtime_error("meta.json: expected a string");
    return string;
  }
  // A number, or `fallback` where the value is null (meta.json writes infinite bounds as null).
  double number_or(double fallback) const { return is_null() ? fallback : as_number(); }
};

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Value parse() {
    Value v = value();
    skip_ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("meta.json: " + what + " at offset " + std::to_string(i_));
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  bool consume(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(i_, n, word) == 0) {
      i_ += n;
      return true;
    }
    return false;
  }
  Value value() {
    skip_ws();
    if (i_ >= s_.size()) fail("unexpected end");
    Value v;
    char c = s_[i_];
    if (c == '{') {
      v.kind = Value::Kind::Object;
      ++i_;
      skip_ws();
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return v;
      }
      while (true) {
        skip_ws();
        std::string key = string_literal();
        skip_ws();
        if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':'");
        ++i_;
        v.object[key] = value();
        skip_ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') {
          ++i_;
          return v;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Value::Kind::Array;
      ++i_;
      skip_ws();
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return v;
      }
      while (true) {
        v.array.push_back(value());
        skip_ws();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') {
          ++i_;
          return v;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Value::Kind::String;
      v.string = string_literal();
      return v;
    }
    if (consume("true")) {
      v.kind = Value::Kind::Bool;
      v.boolean = true;
      return v;
    }
    if (consume("false")) {
      v.kind = Value::Kind::Bool;
      return v;
    }
    if (consume("null")) return v;
    // A number: strtod accepts exactly the JSON number grammar (and a little more).
    const char* begin = s_.c_str() + i_;
    char* end = nullptr;
    double d = std::strtod(begin, &end);
    if (end == begin) fail("unexpected character");
    i_ += static_cast<size_t>(end - begin);
    v.kind = Value::Kind::Number;
    v.number = d;
    return v;
  }
  std::string string_literal() {
    if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (i_ >= s_.size()) fail("bad escape");
      char e = s_[i_++];
      switch (e) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'u': {
          // Only needed for non-ASCII text in free-form fields; keep a placeholder, the controller
          // never interprets those fields.
          if (i_ + 4 > s_.size()) fail("bad \\u escape");
          i_ += 4;
          out.push_back('?');
          break;
        }
        default: out.push_back(e);
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }
};

inline Value parse(const std::string& text) { return Parser(text).parse(); }

}  // namespace gail_robot::json
