{{- define "busted.name" -}}{{ .Release.Name }}{{- end -}}

{{- define "busted.labels" -}}
app.kubernetes.io/name: busted
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "busted.selector" -}}
app.kubernetes.io/name: busted
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
