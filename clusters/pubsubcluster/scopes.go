package pubsubcluster

import (
	"slices"
	"strings"
)

// Component metadata keys that scope topics, as daprd reads them.
const (
	mdAllowedTopics      = "allowedTopics"
	mdProtectedTopics    = "protectedTopics"
	mdPublishingScopes   = "publishingScopes"
	mdSubscriptionScopes = "subscriptionScopes"
)

// scopes are the topic scopes of one component for one app id, compiled
// when the component is built.
type scopes struct {
	allowed   []string // allowedTopics: when set, no other topic is usable
	protected []string // protectedTopics: usable only when a scope lists them
	publish   []string // publishingScopes of this app (nil: the app is not listed)
	subscribe []string // subscriptionScopes of this app
}

func lookup(md map[string]string, key string) string {
	if v, ok := md[key]; ok {
		return v
	}
	for k, v := range md {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

func splitList(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// appScopes reads "app1=topic1,topic2;app2=topic3" and returns the topics of
// appID; nil when appID is not listed.
func appScopes(s, appID string) []string {
	var out []string
	for _, part := range strings.Split(s, ";") {
		app, topics, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(app) != appID {
			continue
		}
		if out == nil {
			out = []string{}
		}
		out = append(out, splitList(topics)...)
	}
	return out
}

func parseScopes(md map[string]string, appID string) scopes {
	return scopes{
		allowed:   splitList(lookup(md, mdAllowedTopics)),
		protected: splitList(lookup(md, mdProtectedTopics)),
		publish:   appScopes(lookup(md, mdPublishingScopes), appID),
		subscribe: appScopes(lookup(md, mdSubscriptionScopes), appID),
	}
}

// allowed is daprd's rule: a topic outside allowedTopics (when set) is
// refused; a protected topic needs a scope that lists it; otherwise, when
// the app has scopes, the topic must be one of them.
func (s *scopes) allowedFor(topic string, scoped []string) bool {
	if len(s.allowed) > 0 && !slices.Contains(s.allowed, topic) {
		return false
	}
	protected := slices.Contains(s.protected, topic)
	if !protected && scoped == nil {
		return true
	}
	return slices.Contains(scoped, topic)
}

func (s *scopes) empty() bool {
	return s.allowed == nil && s.protected == nil && s.publish == nil && s.subscribe == nil
}
