package config

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api"
)

// Source is config text and where it came from.
type Source struct {
	// Namespace and Name of the ConfigMap, empty for bare config text.
	Namespace, Name string
	Text            []byte
}

// FromFile accepts what a user would check before applying: a ConfigMap
// manifest as given to kubectl (possibly one of several documents), or the
// bare config text. For a manifest it returns the text under data.config.
func FromFile(b []byte) (Source, error) {
	var found []Source
	sawKind := false
	for i, doc := range SplitDocuments(b) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			// Not a manifest we can read: leave it to Parse, which names the
			// YAML error, when it is the only document.
			continue
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal(js, &head); err != nil || head.Kind == "" {
			continue
		}
		sawKind = true
		if head.Kind != "ConfigMap" {
			continue
		}
		text, ok := head.Data[api.ConfigKey]
		if !ok {
			return Source{}, fmt.Errorf("ConfigMap %s (document %d) has no data key %q; put the address-pool YAML under data.%s", head.Metadata.Name, i+1, api.ConfigKey, api.ConfigKey)
		}
		found = append(found, Source{Namespace: head.Metadata.Namespace, Name: head.Metadata.Name, Text: []byte(text)})
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		for _, s := range found {
			if s.Name == api.DefaultConfigName {
				return s, nil
			}
		}
		return Source{}, fmt.Errorf("the file has %d ConfigMaps and none is named %q; check one at a time", len(found), api.DefaultConfigName)
	case sawKind:
		return Source{}, fmt.Errorf("the file has Kubernetes objects but no ConfigMap; give the address-pool ConfigMap or its bare config text")
	}
	return Source{Text: b}, nil
}

// SplitDocuments splits a YAML stream on "---" separator lines, as kubectl
// does, so several objects in one file can be read.
func SplitDocuments(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), len(b)+1)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "---") && strings.TrimSpace(strings.SplitN(line[3:], "#", 2)[0]) == "" {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	docs = append(docs, cur.Bytes())
	return docs
}
