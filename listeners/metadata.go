package listeners

import "sort"

// Metadata is what GET /v1.0/metadata and gRPC GetMetadata answer, in
// daprd's JSON shape.
type Metadata struct {
	ID                      string                  `json:"id"`
	RuntimeVersion          string                  `json:"runtimeVersion"`
	EnabledFeatures         []string                `json:"enabledFeatures"`
	Actors                  []any                   `json:"actors,omitempty"`
	Components              []MetadataComponent     `json:"components"`
	Extended                map[string]string       `json:"extended"`
	Subscriptions           []MetadataSubscription  `json:"subscriptions"`
	HTTPEndpoints           []any                   `json:"httpEndpoints"`
	AppConnectionProperties AppConnectionProperties `json:"appConnectionProperties"`
}

// MetadataComponent describes one loaded component.
type MetadataComponent struct {
	Name         string   `json:"name"`
	Type         string   `json:"type"`
	Version      string   `json:"version"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// MetadataSubscription describes one active subscription.
type MetadataSubscription struct {
	PubSubName      string            `json:"pubsubname"`
	Topic           string            `json:"topic"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	Rules           []MetadataRule    `json:"rules,omitempty"`
	DeadLetterTopic string            `json:"deadLetterTopic,omitempty"`
	Type            string            `json:"type,omitempty"`
}

// MetadataRule is one routing rule of a subscription.
type MetadataRule struct {
	Match string `json:"match,omitempty"`
	Path  string `json:"path"`
}

// AppConnectionProperties describes the app channel.
type AppConnectionProperties struct {
	Port           int    `json:"port,omitempty"`
	Protocol       string `json:"protocol"`
	ChannelAddress string `json:"channelAddress"`
	MaxConcurrency int    `json:"maxConcurrency,omitempty"`
}

// SubscriptionLister is set by the subscription machinery so that the
// metadata APIs can list active subscriptions.
type SubscriptionLister func() []MetadataSubscription

// Metadata builds the metadata answer from the current snapshot.
func (rt *Runtime) Metadata() Metadata {
	md := Metadata{RuntimeVersion: rt.Version, EnabledFeatures: []string{}, Extended: map[string]string{},
		Components: []MetadataComponent{}, Subscriptions: []MetadataSubscription{}, HTTPEndpoints: []any{}}
	if s := rt.Snapshot(); s != nil {
		c := s.Config
		md.ID = c.AppID
		md.AppConnectionProperties = AppConnectionProperties{Port: c.AppPort, Protocol: c.AppProtocol, ChannelAddress: c.AppChannelAddress, MaxConcurrency: max(c.AppMaxConcurrency, 0)}
	}
	if set := rt.Clusters(); set != nil {
		for _, ci := range set.Components() {
			md.Components = append(md.Components, MetadataComponent{Name: ci.Name, Type: ci.Type, Version: ci.Version, Capabilities: ci.Capabilities})
		}
	}
	if l := rt.subscriptions.Load(); l != nil {
		md.Subscriptions = append(md.Subscriptions, (*l)()...)
	}
	rt.extended.Range(func(k, v any) bool {
		md.Extended[k.(string)] = v.(string)
		return true
	})
	md.Extended["daprRuntimeVersion"] = rt.Version
	sort.Strings(md.EnabledFeatures)
	return md
}

// SetSubscriptionLister installs the function that lists subscriptions.
func (rt *Runtime) SetSubscriptionLister(f SubscriptionLister) { rt.subscriptions.Store(&f) }
