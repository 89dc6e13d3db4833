from api.vendors import compatibility_markdown

print(compatibility_markdown())
